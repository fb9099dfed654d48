//! The S3 operations (s3s's `S3` trait) over [`Store`]: request and
//! response shapes, conditions, ranges, streaming bodies, error codes.

use super::keys::Keys;
use super::store::{
    hex, Item, ListReq, ObjError, ObjInfo, ObjMeta, Staged, Store, CHUNK, EMPTY_MD5,
};
use crate::fs::{Fs, FsError};
use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest single PUT (as S3: 5 GiB).
pub const MAX_PUT: u64 = 5 << 30;
/// Most keys a listing page or a DeleteObjects request holds.
const MAX_KEYS: usize = 1000;

/// The S3 endpoint's operations.
#[derive(Debug, Clone)]
pub struct Service {
    store: Arc<Store>,
    keys: Arc<Keys>,
}

impl Service {
    /// Operations over `store`, with rights from `keys`.
    pub fn new(store: Arc<Store>, keys: Arc<Keys>) -> Service {
        Service { store, keys }
    }
}

/// An S3 error from an object-layer error.
fn s3err(e: ObjError) -> S3Error {
    use S3ErrorCode as C;
    match e {
        ObjError::NoSuchBucket => s3_error!(NoSuchBucket, "The specified bucket does not exist"),
        ObjError::NoSuchKey => s3_error!(NoSuchKey, "The specified key does not exist."),
        ObjError::InvalidBucketName(m) => S3Error::with_message(C::InvalidBucketName, m),
        ObjError::BucketExists => s3_error!(
            BucketAlreadyOwnedByYou,
            "Your previous request to create the named bucket succeeded and you already own it."
        ),
        ObjError::BucketNotEmpty => {
            s3_error!(
                BucketNotEmpty,
                "The bucket you tried to delete is not empty"
            )
        }
        ObjError::InvalidKey(m) => S3Error::with_message(C::InvalidArgument, m),
        ObjError::KeyTooLong(m) => S3Error::with_message(C::KeyTooLongError, m),
        ObjError::Conflict(m) => {
            let mut e = S3Error::with_message(C::Custom("KeyConflict".into()), m);
            e.set_status_code(hyper::StatusCode::CONFLICT);
            e
        }
        ObjError::PreconditionFailed => s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ),
        ObjError::MetadataTooLarge => s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size (2 KiB)."
        ),
        ObjError::BadDigest => s3_error!(
            BadDigest,
            "The Content-MD5 you specified did not match what we received."
        ),
        ObjError::NoSuchUpload => s3_error!(
            NoSuchUpload,
            "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
        ),
        ObjError::InvalidPart(m) => S3Error::with_message(C::InvalidPart, m),
        ObjError::InvalidPartOrder => s3_error!(
            InvalidPartOrder,
            "The list of parts was not in ascending order. Parts must be ordered by part number."
        ),
        ObjError::EntityTooSmall => s3_error!(
            EntityTooSmall,
            "Your proposed upload is smaller than the minimum allowed object size (5 MiB for each part but the last)."
        ),
        ObjError::Invalid(m) => S3Error::with_message(C::InvalidArgument, m),
        ObjError::Fs(e) => fs_err(e),
    }
}

fn fs_err(e: FsError) -> S3Error {
    use crate::meta::MetaError;
    use crate::pool::PoolError;
    match &e {
        FsError::NameTooLong => S3Error::with_message(S3ErrorCode::KeyTooLongError, e.to_string()),
        FsError::Meta(MetaError::ReadOnly) | FsError::Pool(PoolError::BelowWriteQuorum { .. }) => {
            log::warn!("S3 request refused: {e}");
            S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                format!("the pool takes no writes now: {e}"),
            )
        }
        FsError::Pool(PoolError::NoSpace) | FsError::Meta(MetaError::NoSpace(_)) => {
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, format!("no space: {e}"))
        }
        _ => {
            log::error!("S3 request failed: {e}");
            S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
        }
    }
}

/// Run a blocking object-layer call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObjError> + Send + 'static,
) -> S3Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(s3err),
        Err(e) => Err(S3Error::internal_error(e)),
    }
}

fn systime(t: (i64, u32)) -> SystemTime {
    if t.0 >= 0 {
        UNIX_EPOCH + Duration::new(t.0 as u64, t.1)
    } else {
        UNIX_EPOCH - Duration::new(t.0.unsigned_abs(), 0) + Duration::new(0, t.1)
    }
}

fn stamp(t: (i64, u32)) -> Timestamp {
    Timestamp::from(systime(t))
}

fn secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn strong(md5: &str) -> ETag {
    ETag::Strong(md5.to_string())
}

fn matches(c: &ETagCondition, etag: &str) -> bool {
    match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(t) => t.value() == etag,
    }
}

/// The GET/HEAD conditions of RFC 9110 as S3 applies them: If-Match
/// decides over If-Unmodified-Since (412), If-None-Match over
/// If-Modified-Since (304).
fn check_conditions(
    info: &ObjInfo,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let mtime = info.mtime.0;
    let failed = || {
        s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        )
    };
    match if_match {
        Some(c) if !matches(c, &info.etag) => return Err(failed()),
        Some(_) => {}
        None => {
            if if_unmodified_since.is_some_and(|t| mtime > secs(t)) {
                return Err(failed());
            }
        }
    }
    let not_modified = match if_none_match {
        Some(c) => matches(c, &info.etag),
        None => if_modified_since.is_some_and(|t| mtime <= secs(t)),
    };
    if not_modified {
        let mut e = S3Error::new(S3ErrorCode::NotModified);
        let mut h = hyper::HeaderMap::new();
        if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("\"{}\"", info.etag)) {
            h.insert(hyper::header::ETAG, v);
        }
        e.set_headers(h);
        return Err(e);
    }
    Ok(())
}

/// Content headers and user metadata of a request.
fn request_meta(
    headers: [(&str, Option<&String>); 5],
    user: Option<&Metadata>,
) -> S3Result<ObjMeta> {
    let mut m = ObjMeta::default();
    for (name, v) in headers {
        if let Some(v) = v {
            m.headers.insert(name.to_string(), v.clone());
        }
    }
    if let Some(u) = user {
        for (k, v) in u {
            let k = k.to_ascii_lowercase();
            if k.is_empty() || k.len() > 200 || k.contains('\0') {
                return Err(s3_error!(InvalidArgument, "bad user metadata name {k:?}"));
            }
            m.user.insert(k, v.clone());
        }
    }
    Ok(m)
}

/// Decode standard base64 (Content-MD5).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim().bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Percent-encode a listing value (encoding-type=url): all but unreserved
/// characters and '/'.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let b: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(b?).ok()
}

fn max_keys(m: Option<i32>) -> S3Result<usize> {
    match m {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as usize).min(MAX_KEYS)),
    }
}

fn url_wanted(e: &Option<EncodingType>) -> S3Result<bool> {
    match e {
        None => Ok(false),
        Some(e) if e.as_str() == EncodingType::URL => Ok(true),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "Invalid Encoding Method specified in Request"
        )),
    }
}

/// Split a listing into S3's contents and common prefixes.
fn split_items(items: &[Item], url: bool) -> (Vec<Object>, Vec<CommonPrefix>) {
    let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
    let mut contents = Vec::new();
    let mut prefixes = Vec::new();
    for it in items {
        match it {
            Item::Obj(k, info) => contents.push(Object {
                key: Some(enc(k)),
                size: Some(info.size as i64),
                e_tag: Some(strong(&info.etag)),
                last_modified: Some(stamp(info.mtime)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            }),
            Item::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(enc(p)),
            }),
        }
    }
    (contents, prefixes)
}

/// The bucket and key of a copy source that `grant` may read.
fn copy_source(grant: &super::keys::Grant, cs: &CopySource) -> S3Result<(String, String)> {
    let (bucket, key) = match cs {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            if version_id.as_deref().is_some_and(|v| v != "null") {
                return Err(s3_error!(NoSuchVersion, "shardfs keeps no object versions"));
            }
            (bucket.to_string(), key.to_string())
        }
        _ => {
            return Err(s3_error!(
                NotImplemented,
                "copy sources other than BUCKET/KEY are not supported"
            ))
        }
    };
    if !grant.may_use(&bucket) {
        return Err(s3_error!(
            AccessDenied,
            "this access key may not use bucket {bucket}"
        ));
    }
    Ok((bucket, key))
}

/// The x-amz-copy-source-if-* conditions: every failure is 412, as S3.
fn check_copy_conditions(
    info: &ObjInfo,
    c: &(
        Option<ETagCondition>,
        Option<ETagCondition>,
        Option<Timestamp>,
        Option<Timestamp>,
    ),
) -> S3Result<()> {
    check_conditions(info, c.0.as_ref(), c.1.as_ref(), c.2.as_ref(), c.3.as_ref()).map_err(|e| {
        if *e.code() == S3ErrorCode::NotModified {
            s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            )
        } else {
            e
        }
    })
}

/// Parse x-amz-copy-source-range (`bytes=FIRST-LAST`, inclusive) against
/// a source of `size` bytes: the byte range.
fn copy_range(r: Option<&str>, size: u64) -> S3Result<(u64, u64)> {
    let Some(r) = r else {
        return Ok((0, size));
    };
    let bad = || {
        s3_error!(InvalidArgument, "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy")
    };
    let (a, b) = r
        .strip_prefix("bytes=")
        .and_then(|x| x.split_once('-'))
        .ok_or_else(bad)?;
    let a: u64 = a.parse().map_err(|_| bad())?;
    let b: u64 = b.parse().map_err(|_| bad())?;
    if a > b {
        return Err(bad());
    }
    if b >= size {
        return Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable"
        ));
    }
    Ok((a, b + 1))
}

/// Only the "null" version exists (no versioning yet).
fn null_version(v: &Option<String>) -> S3Result<()> {
    match v.as_deref() {
        None | Some("null") => Ok(()),
        Some(_) => Err(s3_error!(InvalidArgument, "Invalid version id specified")),
    }
}

/// A read handle released when dropped.
struct Handle {
    fs: Arc<Fs>,
    fh: u64,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.fs.release(self.fh);
    }
}

/// The body of a GET: `fs.read` in chunks on blocking threads, from an
/// open handle (so a PUT or delete meanwhile leaves these bytes alone).
fn read_stream(h: Handle, ino: u64, start: u64, end: u64) -> StreamingBlob {
    struct St {
        h: Handle,
        off: u64,
        end: u64,
    }
    let st = St { h, off: start, end };
    let s = futures::stream::unfold(st, move |mut st| async move {
        if st.off >= st.end {
            return None;
        }
        let n = (st.end - st.off).min(CHUNK as u64) as u32;
        let fs = st.h.fs.clone();
        let off = st.off;
        let r = tokio::task::spawn_blocking(move || fs.read(ino, off, n)).await;
        let item = match r {
            Ok(Ok(d)) if !d.is_empty() => {
                st.off += d.len() as u64;
                Ok(Bytes::from(d))
            }
            Ok(Ok(_)) => {
                st.off = st.end;
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the object was truncated while being read",
                ))
            }
            Ok(Err(e)) => {
                log::error!("S3 GET of inode {ino}: {e}");
                st.off = st.end;
                Err(std::io::Error::other(e.to_string()))
            }
            Err(e) => {
                st.off = st.end;
                Err(std::io::Error::other(e.to_string()))
            }
        };
        Some((item, st))
    });
    StreamingBlob::wrap(s)
}

/// Stream a request body into a staged file, 1 MiB per write.
async fn stream_into(mut st: Staged, body: Option<StreamingBlob>, limit: u64) -> S3Result<Staged> {
    let Some(mut body) = body else {
        return Ok(st);
    };
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut total = 0u64;
    loop {
        let next = body.next().await;
        let done = next.is_none();
        if let Some(chunk) = next {
            let chunk = chunk.map_err(|e| {
                S3Error::with_message(
                    S3ErrorCode::IncompleteBody,
                    format!("reading the body: {e}"),
                )
            })?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(s3_error!(
                    EntityTooLarge,
                    "Your proposed upload exceeds the maximum allowed object size."
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        if buf.len() >= CHUNK || (done && !buf.is_empty()) {
            let data = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK));
            let (back, r) = tokio::task::spawn_blocking(move || {
                let r = st.append(&data);
                (st, r)
            })
            .await
            .map_err(S3Error::internal_error)?;
            st = back;
            r.map_err(s3err)?;
        }
        if done {
            return Ok(st);
        }
    }
}

fn creds_grant<'a>(
    keys: &'a Keys,
    c: &Option<s3s::auth::Credentials>,
) -> S3Result<&'a super::keys::Grant> {
    c.as_ref()
        .and_then(|c| keys.grant(&c.access_key))
        .ok_or_else(|| s3_error!(AccessDenied))
}

#[async_trait::async_trait]
impl S3 for Service {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let grant = creds_grant(&self.keys, &req.credentials)?.clone();
        let store = self.store.clone();
        let all = blocking(move || store.buckets()).await?;
        let buckets = all
            .into_iter()
            .filter(|(n, _)| grant.may_use(n))
            .map(|(name, t)| Bucket {
                name: Some(name),
                creation_date: Some(stamp(t)),
                ..Default::default()
            })
            .collect();
        let id = req.credentials.map(|c| c.access_key).unwrap_or_default();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some(id.clone()),
                id: Some(id),
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let store = self.store.clone();
        let b = req.input.bucket.clone();
        blocking(move || store.create_bucket(&b)).await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let store = self.store.clone();
        let b = req.input.bucket;
        blocking(move || store.delete_bucket(&b)).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let store = self.store.clone();
        let b = req.input.bucket;
        blocking(move || store.bucket(&b)).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let store = self.store.clone();
        let b = req.input.bucket;
        blocking(move || store.bucket(&b)).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        if input.content_length.is_some_and(|n| n as u64 > MAX_PUT) {
            return Err(s3_error!(
                EntityTooLarge,
                "Your proposed upload exceeds the maximum allowed object size."
            ));
        }
        let meta = request_meta(
            [
                ("content-type", input.content_type.as_ref()),
                ("content-encoding", input.content_encoding.as_ref()),
                ("content-disposition", input.content_disposition.as_ref()),
                ("content-language", input.content_language.as_ref()),
                ("cache-control", input.cache_control.as_ref()),
            ],
            input.metadata.as_ref(),
        )?;
        let content_md5 = match &input.content_md5 {
            Some(s) => Some(base64_decode(s).filter(|d| d.len() == 16).ok_or_else(|| {
                s3_error!(InvalidDigest, "The Content-MD5 you specified is not valid.")
            })?),
            None => None,
        };
        if meta.user_size() > super::store::MAX_USER_META {
            // before the body is read
            return Err(s3err(ObjError::MetadataTooLarge));
        }
        let noreplace = matches!(input.if_none_match, Some(ETagCondition::Any));
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let store = self.store.clone();
        if key.ends_with('/') {
            // a directory marker: no data
            if input.content_length.unwrap_or(0) != 0 {
                return Err(s3_error!(
                    InvalidArgument,
                    "a key ending in '/' is a directory on shardfs and takes no data"
                ));
            }
            blocking(move || store.put_marker(&bucket, &key)).await?;
            return Ok(S3Response::new(PutObjectOutput {
                e_tag: Some(strong(EMPTY_MD5)),
                ..Default::default()
            }));
        }
        let st = blocking(move || store.begin_put(&bucket, &key)).await?;
        let st = stream_into(st, input.body, MAX_PUT).await?;
        if let Some(n) = input.content_length {
            if st.written != n as u64 {
                return Err(s3_error!(
                    IncompleteBody,
                    "You did not provide the number of bytes specified by the Content-Length HTTP header."
                ));
            }
        }
        let store = self.store.clone();
        let (etag, _) =
            blocking(move || store.commit(st, &meta, content_md5.as_deref(), noreplace)).await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(strong(&etag)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        null_version(&input.version_id)?;
        let store = self.store.clone();
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let (info, fh, meta) = blocking(move || {
            // open before answering: the handle keeps these bytes while
            // the key is replaced or deleted
            for _ in 0..5 {
                let info = store.object(&bucket, &key)?;
                let fh = match store.fs.open(info.ino, false) {
                    Ok(fh) => fh,
                    Err(FsError::NotFound) => continue,
                    Err(e) => return Err(e.into()),
                };
                let meta = match store.meta_of(info.ino) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = store.fs.release(fh);
                        return Err(e);
                    }
                };
                return Ok((info, fh, meta));
            }
            Err(ObjError::NoSuchKey)
        })
        .await?;
        let h = Handle {
            fs: self.store.fs.clone(),
            fh,
        };
        check_conditions(
            &info,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let (start, end) = match &input.range {
            Some(r) => {
                let r = r.check(info.size).map_err(|_| {
                    s3_error!(InvalidRange, "The requested range is not satisfiable")
                })?;
                (r.start, r.end)
            }
            None => (0, info.size),
        };
        let content_range = input
            .range
            .as_ref()
            .map(|_| format!("bytes {}-{}/{}", start, end.saturating_sub(1), info.size));
        let body = read_stream(h, info.ino, start, end);
        let header = |name: &str| meta.headers.get(name).cloned();
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some((end - start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(strong(&info.etag)),
            last_modified: Some(stamp(info.mtime)),
            content_type: input
                .response_content_type
                .or_else(|| header("content-type"))
                .or_else(|| Some("binary/octet-stream".into())),
            content_encoding: input
                .response_content_encoding
                .or_else(|| header("content-encoding")),
            content_disposition: input
                .response_content_disposition
                .or_else(|| header("content-disposition")),
            content_language: input
                .response_content_language
                .or_else(|| header("content-language")),
            cache_control: input
                .response_cache_control
                .or_else(|| header("cache-control")),
            metadata: (!meta.user.is_empty()).then(|| meta.user.into_iter().collect()),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        null_version(&input.version_id)?;
        let store = self.store.clone();
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let (info, meta) = blocking(move || {
            let info = store.object(&bucket, &key)?;
            let meta = store.meta_of(info.ino)?;
            Ok((info, meta))
        })
        .await?;
        check_conditions(
            &info,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let header = |name: &str| meta.headers.get(name).cloned();
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(info.size as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(strong(&info.etag)),
            last_modified: Some(stamp(info.mtime)),
            content_type: header("content-type").or_else(|| Some("binary/octet-stream".into())),
            content_encoding: header("content-encoding"),
            content_disposition: header("content-disposition"),
            content_language: header("content-language"),
            cache_control: header("cache-control"),
            metadata: (!meta.user.is_empty()).then(|| meta.user.into_iter().collect()),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        null_version(&req.input.version_id)?;
        let store = self.store.clone();
        let (bucket, key) = (req.input.bucket, req.input.key);
        blocking(move || store.delete(&bucket, &key)).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        if input.delete.objects.len() > MAX_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "a DeleteObjects request names at most 1000 keys"
            ));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let keys: Vec<String> = input.delete.objects.into_iter().map(|o| o.key).collect();
        let store = self.store.clone();
        let bucket = input.bucket;
        let results = blocking(move || {
            store.bucket(&bucket)?;
            Ok(keys
                .into_iter()
                .map(|k| {
                    let r = store.delete(&bucket, &k);
                    (k, r)
                })
                .collect::<Vec<_>>())
        })
        .await?;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for (key, r) in results {
            match r {
                Ok(()) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(key),
                            ..Default::default()
                        })
                    }
                }
                Err(e) => {
                    let e = s3err(e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(key),
                        message: e.message().map(str::to_string),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let grant = creds_grant(&self.keys, &req.credentials)?;
        let input = req.input;
        let (src_bucket, src_key) = copy_source(grant, &input.copy_source)?;
        let replace = match input.metadata_directive.as_ref().map(|d| d.as_str()) {
            None | Some(MetadataDirective::COPY) => false,
            Some(MetadataDirective::REPLACE) => true,
            Some(_) => return Err(s3_error!(InvalidArgument, "Unknown metadata directive.")),
        };
        if !replace && src_bucket == input.bucket && src_key == input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself \
                 without changing the object's metadata, storage class, website redirect \
                 location or encryption attributes."
            ));
        }
        let new_meta = if replace {
            Some(request_meta(
                [
                    ("content-type", input.content_type.as_ref()),
                    ("content-encoding", input.content_encoding.as_ref()),
                    ("content-disposition", input.content_disposition.as_ref()),
                    ("content-language", input.content_language.as_ref()),
                    ("cache-control", input.cache_control.as_ref()),
                ],
                input.metadata.as_ref(),
            )?)
        } else {
            None
        };
        let conds = (
            input.copy_source_if_match.clone(),
            input.copy_source_if_none_match.clone(),
            input.copy_source_if_modified_since.clone(),
            input.copy_source_if_unmodified_since.clone(),
        );
        let store = self.store.clone();
        let (dst_bucket, dst_key) = (input.bucket.clone(), input.key.clone());
        let (etag, mtime) =
            tokio::task::spawn_blocking(move || -> S3Result<(String, (i64, u32))> {
                let info = store.object(&src_bucket, &src_key).map_err(s3err)?;
                check_copy_conditions(&info, &conds)?;
                if dst_key.ends_with('/') {
                    if info.size != 0 {
                        return Err(s3_error!(
                            InvalidArgument,
                            "a key ending in '/' is a directory on shardfs and takes no data"
                        ));
                    }
                    store.put_marker(&dst_bucket, &dst_key).map_err(s3err)?;
                    return Ok((EMPTY_MD5.to_string(), crate::fs::schema::now()));
                }
                let fh = store.fs.open(info.ino, false).map_err(fs_err)?;
                let h = Handle {
                    fs: store.fs.clone(),
                    fh,
                };
                let meta = match new_meta {
                    Some(m) => m,
                    None => store.meta_of(info.ino).map_err(s3err)?,
                };
                let mut st = store.begin_put(&dst_bucket, &dst_key).map_err(s3err)?;
                let mut off = 0;
                while off < info.size {
                    let n = (info.size - off).min(CHUNK as u64) as u32;
                    let d = store.fs.read(info.ino, off, n).map_err(fs_err)?;
                    if d.is_empty() {
                        break;
                    }
                    st.append(&d).map_err(s3err)?;
                    off += d.len() as u64;
                }
                drop(h);
                let (etag, _) = store.commit(st, &meta, None, false).map_err(s3err)?;
                let dst = store.object(&dst_bucket, &dst_key).map_err(s3err)?;
                Ok((etag, dst.mtime))
            })
            .await
            .map_err(S3Error::internal_error)??;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(strong(&etag)),
                last_modified: Some(stamp(mtime)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let url = url_wanted(&input.encoding_type)?;
        let lr = ListReq {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
            after: input.marker.clone().filter(|m| !m.is_empty()),
            max: max_keys(input.max_keys)?,
        };
        let store = self.store.clone();
        let bucket = input.bucket.clone();
        let lr2 = lr.clone();
        let (items, truncated) = blocking(move || store.list(&bucket, &lr2)).await?;
        let (contents, prefixes) = split_items(&items, url);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let next_marker = truncated
            .then(|| items.last().map(|i| i.name().to_string()))
            .flatten()
            .map(enc);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(lr.prefix)),
            marker: Some(enc(input.marker.unwrap_or_default())),
            max_keys: Some(lr.max as i32),
            is_truncated: Some(truncated),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            delimiter: input.delimiter.map(enc),
            next_marker,
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        // no versioning yet: every object is its one "null" version
        let input = req.input;
        let url = url_wanted(&input.encoding_type)?;
        let marker = input.key_marker.clone().filter(|m| !m.is_empty());
        let lr = ListReq {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
            after: marker,
            max: max_keys(input.max_keys)?,
        };
        let store = self.store.clone();
        let bucket = input.bucket.clone();
        let lr2 = lr.clone();
        let (items, truncated) = blocking(move || store.list(&bucket, &lr2)).await?;
        let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
        let mut versions = Vec::new();
        let mut prefixes = Vec::new();
        for it in &items {
            match it {
                Item::Obj(k, info) => versions.push(ObjectVersion {
                    key: Some(enc(k)),
                    version_id: Some("null".into()),
                    is_latest: Some(true),
                    size: Some(info.size as i64),
                    e_tag: Some(strong(&info.etag)),
                    last_modified: Some(stamp(info.mtime)),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    ..Default::default()
                }),
                Item::Prefix(p) => prefixes.push(CommonPrefix {
                    prefix: Some(enc(p)),
                }),
            }
        }
        let next = truncated
            .then(|| items.last().map(|i| enc(i.name())))
            .flatten();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(&lr.prefix)),
            key_marker: input.key_marker.as_deref().map(enc),
            version_id_marker: input.version_id_marker,
            max_keys: Some(lr.max as i32),
            delimiter: input.delimiter.as_deref().map(enc),
            encoding_type: input.encoding_type,
            is_truncated: Some(truncated),
            next_version_id_marker: next.as_ref().map(|_| "null".to_string()),
            next_key_marker: next,
            versions: Some(versions),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let meta = request_meta(
            [
                ("content-type", input.content_type.as_ref()),
                ("content-encoding", input.content_encoding.as_ref()),
                ("content-disposition", input.content_disposition.as_ref()),
                ("content-language", input.content_language.as_ref()),
                ("cache-control", input.cache_control.as_ref()),
            ],
            input.metadata.as_ref(),
        )?;
        let store = self.store.clone();
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let id = blocking(move || store.create_upload(&bucket, &key, &meta)).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        if input.content_length.is_some_and(|n| n as u64 > MAX_PUT) {
            return Err(s3_error!(
                EntityTooLarge,
                "Your proposed upload exceeds the maximum allowed object size."
            ));
        }
        let content_md5 = match &input.content_md5 {
            Some(s) => Some(base64_decode(s).filter(|d| d.len() == 16).ok_or_else(|| {
                s3_error!(InvalidDigest, "The Content-MD5 you specified is not valid.")
            })?),
            None => None,
        };
        let store = self.store.clone();
        let n = input.part_number;
        let (id, bucket, key) = (input.upload_id, input.bucket, input.key);
        let st = blocking(move || store.begin_part(&id, &bucket, &key, n)).await?;
        let st = stream_into(st, input.body, MAX_PUT).await?;
        if input
            .content_length
            .is_some_and(|len| st.written != len as u64)
        {
            return Err(s3_error!(
                IncompleteBody,
                "You did not provide the number of bytes specified by the Content-Length HTTP header."
            ));
        }
        let store = self.store.clone();
        let etag = blocking(move || store.commit_part(st, n, content_md5.as_deref())).await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(strong(&etag)),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let grant = creds_grant(&self.keys, &req.credentials)?;
        let input = req.input;
        let (src_bucket, src_key) = copy_source(grant, &input.copy_source)?;
        let conds = (
            input.copy_source_if_match.clone(),
            input.copy_source_if_none_match.clone(),
            input.copy_source_if_modified_since.clone(),
            input.copy_source_if_unmodified_since.clone(),
        );
        let range = input.copy_source_range.clone();
        let store = self.store.clone();
        let n = input.part_number;
        let (id, bucket, key) = (input.upload_id, input.bucket, input.key);
        let (etag, mtime) =
            tokio::task::spawn_blocking(move || -> S3Result<(String, (i64, u32))> {
                let info = store.object(&src_bucket, &src_key).map_err(s3err)?;
                check_copy_conditions(&info, &conds)?;
                let (start, end) = copy_range(range.as_deref(), info.size)?;
                let fh = store.fs.open(info.ino, false).map_err(fs_err)?;
                let h = Handle {
                    fs: store.fs.clone(),
                    fh,
                };
                let mut st = store.begin_part(&id, &bucket, &key, n).map_err(s3err)?;
                let mut off = start;
                while off < end {
                    let len = (end - off).min(CHUNK as u64) as u32;
                    let d = store.fs.read(info.ino, off, len).map_err(fs_err)?;
                    if d.is_empty() {
                        break;
                    }
                    st.append(&d).map_err(s3err)?;
                    off += d.len() as u64;
                }
                drop(h);
                let etag = store.commit_part(st, n, None).map_err(s3err)?;
                Ok((etag, crate::fs::schema::now()))
            })
            .await
            .map_err(S3Error::internal_error)??;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(strong(&etag)),
                last_modified: Some(stamp(mtime)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let parts: Vec<(i32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    p.part_number.unwrap_or(0),
                    p.e_tag.map(|e| e.value().to_string()).unwrap_or_default(),
                )
            })
            .collect();
        let store = self.store.clone();
        let (id, bucket, key) = (input.upload_id, input.bucket.clone(), input.key.clone());
        let (etag, _) = blocking(move || store.complete_upload(&id, &bucket, &key, &parts)).await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(strong(&etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let store = self.store.clone();
        blocking(move || store.abort_upload(&input.upload_id, &input.bucket, &input.key)).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let max = match input.max_parts {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(s3_error!(InvalidArgument, "max-parts must not be negative"))
            }
            Some(n) => (n as usize).min(1000),
        };
        let marker = input.part_number_marker.unwrap_or(0);
        let store = self.store.clone();
        let (id, bucket, key) = (
            input.upload_id.clone(),
            input.bucket.clone(),
            input.key.clone(),
        );
        let all = blocking(move || store.list_parts(&id, &bucket, &key)).await?;
        let after: Vec<_> = all.into_iter().filter(|p| p.number > marker).collect();
        let truncated = after.len() > max;
        let page: Vec<_> = after.into_iter().take(max).collect();
        let next = truncated.then(|| page.last().map(|p| p.number)).flatten();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: input.part_number_marker,
            is_truncated: Some(truncated),
            next_part_number_marker: next,
            parts: Some(
                page.into_iter()
                    .map(|p| Part {
                        e_tag: Some(strong(&p.etag)),
                        last_modified: Some(stamp(p.mtime)),
                        part_number: Some(p.number),
                        size: Some(p.size as i64),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let url = url_wanted(&input.encoding_type)?;
        let max = match input.max_uploads {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(s3_error!(
                    InvalidArgument,
                    "max-uploads must not be negative"
                ))
            }
            Some(n) => (n as usize).min(1000),
        };
        let store = self.store.clone();
        let bucket = input.bucket.clone();
        let prefix = input.prefix.clone().unwrap_or_default();
        let all = blocking(move || store.uploads(&bucket, &prefix)).await?;
        let km = input.key_marker.clone().unwrap_or_default();
        let im = input.upload_id_marker.clone().unwrap_or_default();
        let after: Vec<_> = all
            .into_iter()
            .filter(|u| km.is_empty() || u.key > km || (u.key == km && !im.is_empty() && u.id > im))
            .collect();
        let truncated = after.len() > max;
        let page: Vec<_> = after.into_iter().take(max).collect();
        let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
        let last = page.last().cloned();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix.as_deref().map(enc),
            key_marker: input.key_marker.as_deref().map(enc),
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: truncated
                .then(|| last.as_ref().map(|u| enc(&u.key)))
                .flatten(),
            next_upload_id_marker: truncated.then(|| last.map(|u| u.id)).flatten(),
            encoding_type: input.encoding_type,
            uploads: Some(
                page.into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(enc(&u.key)),
                        upload_id: Some(u.id),
                        initiated: Some(stamp(u.initiated)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let url = url_wanted(&input.encoding_type)?;
        let token = match &input.continuation_token {
            Some(t) => Some(unhex(t).ok_or_else(|| {
                s3_error!(
                    InvalidArgument,
                    "The continuation token provided is incorrect"
                )
            })?),
            None => None,
        };
        let after = match (token, input.start_after.clone().filter(|s| !s.is_empty())) {
            (Some(t), Some(s)) => Some(t.max(s)),
            (t, s) => t.or(s),
        };
        let lr = ListReq {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
            after,
            max: max_keys(input.max_keys)?,
        };
        let store = self.store.clone();
        let bucket = input.bucket.clone();
        let lr2 = lr.clone();
        let (items, truncated) = blocking(move || store.list(&bucket, &lr2)).await?;
        let (mut contents, prefixes) = split_items(&items, url);
        if input.fetch_owner == Some(true) {
            let id = req.credentials.map(|c| c.access_key).unwrap_or_default();
            for o in &mut contents {
                o.owner = Some(Owner {
                    display_name: Some(id.clone()),
                    id: Some(id.clone()),
                });
            }
        }
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let next = truncated
            .then(|| items.last().map(|i| hex(i.name().as_bytes())))
            .flatten();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(lr.prefix)),
            max_keys: Some(lr.max as i32),
            key_count: Some(items.len() as i32),
            continuation_token: input.continuation_token,
            is_truncated: Some(truncated),
            next_continuation_token: next,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            delimiter: input.delimiter.map(enc),
            encoding_type: input.encoding_type,
            start_after: input.start_after.map(enc),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_hex() {
        assert_eq!(base64_decode("1B2M2Y8AsgTpgAmY7PhCfg==").unwrap().len(), 16);
        assert_eq!(
            hex(&base64_decode("1B2M2Y8AsgTpgAmY7PhCfg==").unwrap()),
            EMPTY_MD5
        );
        assert_eq!(unhex(&hex(b"a/b c")).as_deref(), Some("a/b c"));
        assert_eq!(unhex("zz"), None);
        assert_eq!(url_encode("a b/c+d%"), "a%20b/c%2Bd%25");
    }
}

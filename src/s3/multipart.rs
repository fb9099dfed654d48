//! Multipart uploads over the filesystem, outside the bucket tree.
//!
//! An upload is a directory `mpu-<id>` in the hidden staging directory
//! (`crate::fs::names::S3_STAGING`), carrying an internal record of its
//! bucket, key and metadata. Each part is written as a file there like a
//! PUT (staged as `tmp-*`, then renamed to `part-NNNNN`), so parts are
//! striped and coded as they arrive. Complete checks the list, writes the
//! parts in order into a staged object and commits it over the key like a
//! PUT, with the multipart ETag; then the upload goes. Uploads outlive
//! daemon restarts and are removed after a configurable age.

use super::store::{
    etag_record, hex, node, parse_key, ObjError, ObjMeta, ObjResult, Staged, Store, CHUNK,
    ETAG_ATTR,
};
use crate::fs::{FsError, Kind};
use md5::{Digest, Md5};

/// Names of upload directories in the staging directory start with this.
pub const UPLOAD_PREFIX: &str = "mpu-";
/// Internal record of an upload (on its directory).
const UPLOAD_ATTR: &str = "s3.upload";
/// Most parts of one upload, as S3.
pub const MAX_PARTS: i32 = 10_000;
/// Smallest part other than the last, as S3.
pub const MIN_PART: u64 = 5 << 20;

/// What an upload's directory records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct UploadRec {
    bucket: String,
    key: String,
    meta: ObjMeta,
}

/// One multipart upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// its id
    pub id: String,
    /// target key
    pub key: String,
    /// when it was created
    pub initiated: (i64, u32),
}

/// One uploaded part.
#[derive(Debug, Clone)]
pub struct PartInfo {
    /// 1..=10000
    pub number: i32,
    /// bytes
    pub size: u64,
    /// when written
    pub mtime: (i64, u32),
    /// MD5 hex
    pub etag: String,
}

fn part_name(n: i32) -> Vec<u8> {
    format!("part-{n:05}").into_bytes()
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit())
}

impl Store {
    /// Start an upload of `bucket`/`key` with metadata `m`: its id.
    pub fn create_upload(&self, bucket: &str, key: &str, m: &ObjMeta) -> ObjResult<String> {
        self.data_target(bucket, key)?;
        if m.user_size() > super::store::MAX_USER_META {
            return Err(ObjError::MetadataTooLarge);
        }
        let id = hex(&rand::random::<[u8; 16]>());
        let staging = self.fs.s3_staging_dir()?;
        let name = format!("{UPLOAD_PREFIX}{id}");
        let a = self
            .fs
            .create_node(staging, name.as_bytes(), node(Kind::Dir, 0o700))?;
        let rec = UploadRec {
            bucket: bucket.to_string(),
            key: key.to_string(),
            meta: m.clone(),
        };
        let v = serde_json::to_vec(&rec).map_err(|e| FsError::Corrupt(e.to_string()))?;
        self.fs
            .set_internal_attr_if(a.ino, UPLOAD_ATTR, |_| Some(Some(v)))?;
        self.fs.meta.sync().map_err(FsError::from)?;
        Ok(id)
    }

    /// The directory and record of upload `id` of `bucket`/`key`.
    fn upload(&self, id: &str, bucket: &str, key: &str) -> ObjResult<(u64, UploadRec)> {
        self.bucket(bucket)?;
        if !valid_id(id) {
            return Err(ObjError::NoSuchUpload);
        }
        let staging = self.fs.s3_staging_dir()?;
        let dir = match self
            .fs
            .lookup(staging, format!("{UPLOAD_PREFIX}{id}").as_bytes())
        {
            Ok(a) => a.ino,
            Err(FsError::NotFound) => return Err(ObjError::NoSuchUpload),
            Err(e) => return Err(e.into()),
        };
        let rec = self.record(dir)?.ok_or(ObjError::NoSuchUpload)?;
        if rec.bucket != bucket || rec.key != key {
            return Err(ObjError::NoSuchUpload);
        }
        Ok((dir, rec))
    }

    fn record(&self, dir: u64) -> ObjResult<Option<UploadRec>> {
        let (_, v) = self.fs.internal_attr(dir, UPLOAD_ATTR)?;
        Ok(v.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Start writing part `n` of upload `id`.
    pub fn begin_part(&self, id: &str, bucket: &str, key: &str, n: i32) -> ObjResult<Staged> {
        if !(1..=MAX_PARTS).contains(&n) {
            return Err(ObjError::Invalid(format!(
                "Part number must be an integer between 1 and {MAX_PARTS}, inclusive"
            )));
        }
        let (dir, _) = self.upload(id, bucket, key)?;
        let name = format!("tmp-{:016x}", rand::random::<u64>()).into_bytes();
        let (a, fh) = self
            .fs
            .create_open(dir, &name, node(Kind::File, 0o600), true)?;
        Ok(Staged {
            fs: self.fs.clone(),
            ino: a.ino,
            fh: Some(fh),
            dir,
            name,
            bucket: dir,
            key: parse_key("part").expect("a plain key"),
            written: 0,
            md5: Md5::new(),
            done: false,
        })
    }

    /// Make part `n` durable and put it in place (replacing an earlier
    /// upload of the same number): its ETag.
    pub fn commit_part(
        &self,
        mut st: Staged,
        n: i32,
        content_md5: Option<&[u8]>,
    ) -> ObjResult<String> {
        let md5 = std::mem::take(&mut st.md5).finalize();
        if content_md5.is_some_and(|want| want != md5.as_slice()) {
            return Err(ObjError::BadDigest);
        }
        let md5 = hex(&md5);
        self.fs.fsync(st.ino)?;
        if let Some(fh) = st.fh.take() {
            self.fs.release(fh)?;
        }
        let before = self.fs.getattr(st.ino)?;
        match self
            .fs
            .rename(st.dir, &st.name, st.dir, &part_name(n), false)
        {
            Ok(()) => {}
            // aborted meanwhile
            Err(FsError::NotFound) => return Err(ObjError::NoSuchUpload),
            Err(e) => return Err(e.into()),
        }
        st.done = true;
        let m2 = md5.clone();
        self.fs.set_internal_attr_if(st.ino, ETAG_ATTR, |now| {
            (now.size == before.size && now.mtime == before.mtime)
                .then(|| Some(etag_record(&m2, now)))
        })?;
        self.fs.meta.sync().map_err(FsError::from)?;
        Ok(md5)
    }

    /// The parts of upload `id`, by number.
    pub fn list_parts(&self, id: &str, bucket: &str, key: &str) -> ObjResult<Vec<PartInfo>> {
        let (dir, _) = self.upload(id, bucket, key)?;
        self.parts_in(dir)
    }

    fn parts_in(&self, dir: u64) -> ObjResult<Vec<PartInfo>> {
        let mut out = Vec::new();
        for (name, kind, ino) in self.entries(dir)? {
            let Some(n) = std::str::from_utf8(&name)
                .ok()
                .and_then(|s| s.strip_prefix("part-"))
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if kind != Kind::File {
                continue;
            }
            let a = self.fs.getattr(ino)?;
            out.push(PartInfo {
                number: n,
                size: a.size,
                mtime: a.mtime,
                etag: self.etag(ino)?,
            });
        }
        out.sort_by_key(|p| p.number);
        Ok(out)
    }

    /// Remove upload `id` and its parts.
    pub fn abort_upload(&self, id: &str, bucket: &str, key: &str) -> ObjResult<()> {
        self.upload(id, bucket, key)?;
        let staging = self.fs.s3_staging_dir()?;
        let name = format!("{UPLOAD_PREFIX}{id}");
        self.remove_entry(staging, name.as_bytes(), Kind::Dir);
        self.fs.meta.sync().map_err(FsError::from)?;
        Ok(())
    }

    /// Complete upload `id` from `parts` (number, ETag as sent): the object
    /// is committed over its key like a PUT, with the multipart ETag
    /// (MD5 of the parts' MD5s, then `-N`). Returns (ETag, size).
    pub fn complete_upload(
        &self,
        id: &str,
        bucket: &str,
        key: &str,
        parts: &[(i32, String)],
    ) -> ObjResult<(String, u64)> {
        let (dir, rec) = self.upload(id, bucket, key)?;
        if parts.is_empty() {
            return Err(ObjError::Invalid(
                "You must specify at least one part".into(),
            ));
        }
        if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(ObjError::InvalidPartOrder);
        }
        let have = self.parts_in(dir)?;
        let mut chosen = Vec::new();
        for (i, (n, etag)) in parts.iter().enumerate() {
            let want = etag.trim_matches('"');
            let Some(p) = have.iter().find(|p| p.number == *n) else {
                return Err(ObjError::InvalidPart(format!("part {n} was not uploaded")));
            };
            if p.etag != want {
                return Err(ObjError::InvalidPart(format!(
                    "part {n}'s ETag is {}, not {want}",
                    p.etag
                )));
            }
            if i + 1 < parts.len() && p.size < MIN_PART {
                return Err(ObjError::EntityTooSmall);
            }
            chosen.push(p.clone());
        }
        let mut all = Md5::new();
        for p in &chosen {
            let mut b = [0u8; 16];
            for (j, byte) in b.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&p.etag[2 * j..2 * j + 2], 16).unwrap_or(0);
            }
            all.update(b);
        }
        let etag = format!("{}-{}", hex(&all.finalize()), chosen.len());
        let mut st = self.begin_put(bucket, key)?;
        for p in &chosen {
            let ino = self.fs.lookup(dir, &part_name(p.number))?.ino;
            let fh = self.fs.open(ino, false)?;
            let r = (|| -> ObjResult<()> {
                let mut off = 0;
                while off < p.size {
                    let n = (p.size - off).min(CHUNK as u64) as u32;
                    let d = self.fs.read(ino, off, n)?;
                    if d.is_empty() {
                        break;
                    }
                    st.append(&d)?;
                    off += d.len() as u64;
                }
                Ok(())
            })();
            let _ = self.fs.release(fh);
            r?;
        }
        let out = self.commit_as(st, &rec.meta, None, false, Some(etag))?;
        let staging = self.fs.s3_staging_dir()?;
        self.remove_entry(
            staging,
            format!("{UPLOAD_PREFIX}{id}").as_bytes(),
            Kind::Dir,
        );
        self.fs.meta.sync().map_err(FsError::from)?;
        Ok(out)
    }

    /// Uploads of `bucket` whose keys start with `prefix`, by key then id.
    pub fn uploads(&self, bucket: &str, prefix: &str) -> ObjResult<Vec<Upload>> {
        self.bucket(bucket)?;
        let staging = self.fs.s3_staging_dir()?;
        let mut out = Vec::new();
        for (name, kind, ino) in self.entries(staging)? {
            let Some(id) = std::str::from_utf8(&name)
                .ok()
                .and_then(|n| n.strip_prefix(UPLOAD_PREFIX))
            else {
                continue;
            };
            if kind != Kind::Dir || !valid_id(id) {
                continue;
            }
            let Some(rec) = self.record(ino)? else {
                continue;
            };
            if rec.bucket == bucket && rec.key.starts_with(prefix) {
                out.push(Upload {
                    id: id.to_string(),
                    key: rec.key,
                    initiated: self.fs.getattr(ino)?.crtime,
                });
            }
        }
        out.sort_by(|a, b| (&a.key, &a.id).cmp(&(&b.key, &b.id)));
        Ok(out)
    }

    /// Remove the unfinished part files (`tmp-*`) of an upload: how many.
    pub(super) fn sweep_upload_temps(&self, dir: u64) -> ObjResult<usize> {
        let mut n = 0;
        for (name, kind, _) in self.entries(dir)? {
            if name.starts_with(b"tmp-") && self.remove_entry(dir, &name, kind) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Remove uploads created more than `max_age` ago: how many.
    pub fn expire_uploads(&self, max_age: std::time::Duration) -> ObjResult<usize> {
        let staging = self.fs.s3_staging_dir()?;
        let now = crate::fs::schema::now();
        let mut n = 0;
        for (name, kind, ino) in self.entries(staging)? {
            if kind != Kind::Dir || !name.starts_with(UPLOAD_PREFIX.as_bytes()) {
                continue;
            }
            let born = self.fs.getattr(ino)?.crtime;
            let age = now.0.saturating_sub(born.0);
            if age >= 0
                && age as u64 >= max_age.as_secs()
                && self.remove_entry(staging, &name, kind)
            {
                n += 1;
            }
        }
        if n > 0 {
            self.fs.meta.sync().map_err(FsError::from)?;
        }
        Ok(n)
    }
}

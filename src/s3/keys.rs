//! The S3 keys file (`--s3-keys`): who may sign requests, and what each
//! key may do.
//!
//! Format (docs/S3.md): one key a line, `ACCESS_KEY SECRET [ro|rw]
//! [BUCKET,...]`; blank lines and lines starting with `#` are ignored. A
//! key is read-write unless `ro` is given, and may use every bucket unless
//! a comma-separated list of buckets is given. The file must be owned by
//! the daemon's user and give no rights to group or others (mode 0600 or
//! 0400): the secrets in it sign requests as anyone holding them.

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{s3_error, S3Result};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

/// What one access key may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// the secret that signs its requests
    secret: String,
    /// may only read
    pub read_only: bool,
    /// the buckets it may use (`None`: all)
    pub buckets: Option<Vec<String>>,
}

impl Grant {
    /// Whether the key may use `bucket`.
    pub fn may_use(&self, bucket: &str) -> bool {
        self.buckets
            .as_ref()
            .is_none_or(|b| b.iter().any(|x| x == bucket))
    }
}

/// The keys of the endpoint, by access key.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    by_access: HashMap<String, Grant>,
}

/// Longest keys file read (a keys file is a few lines).
const MAX_KEYS_FILE: u64 = 1 << 20;

impl Keys {
    /// Read and check the keys file at `path`: owner, mode, then lines.
    pub fn load(path: &Path) -> Result<Keys, String> {
        let what = format!("--s3-keys {}", path.display());
        let f = std::fs::File::open(path).map_err(|e| format!("{what}: {e}"))?;
        let md = f.metadata().map_err(|e| format!("{what}: {e}"))?;
        if !md.is_file() {
            return Err(format!("{what}: not a regular file"));
        }
        let me = nix::unistd::geteuid().as_raw();
        if md.uid() != me {
            return Err(format!(
                "{what}: owned by uid {}, not by the daemon's user (uid {me}); \
                 refusing secrets others could have written",
                md.uid()
            ));
        }
        if md.mode() & 0o077 != 0 {
            return Err(format!(
                "{what}: mode {:04o} lets group or others read it; chmod 600 it",
                md.mode() & 0o7777
            ));
        }
        if md.len() > MAX_KEYS_FILE {
            return Err(format!("{what}: larger than {MAX_KEYS_FILE} bytes"));
        }
        let text = std::io::read_to_string(f).map_err(|e| format!("{what}: {e}"))?;
        Self::parse(&text).map_err(|e| format!("{what}: {e}"))
    }

    /// Parse the lines of a keys file.
    pub fn parse(text: &str) -> Result<Keys, String> {
        let mut keys = Keys::default();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let access = words.next().unwrap_or_default();
            let Some(secret) = words.next() else {
                return Err(format!(
                    "line {n}: give ACCESS_KEY SECRET [ro|rw] [BUCKET,...]"
                ));
            };
            if !(3..=128).contains(&access.len())
                || !access
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            {
                return Err(format!(
                    "line {n}: an access key is 3 to 128 letters, digits, '_' or '-'"
                ));
            }
            if secret.len() < 8 || !secret.bytes().all(|c| c.is_ascii_graphic()) {
                return Err(format!(
                    "line {n}: a secret is at least 8 printable characters without spaces"
                ));
            }
            let mut grant = Grant {
                secret: secret.to_string(),
                read_only: false,
                buckets: None,
            };
            for w in words {
                match w {
                    "ro" => grant.read_only = true,
                    "rw" => grant.read_only = false,
                    list if grant.buckets.is_none() => {
                        let b: Vec<String> = list
                            .split(',')
                            .filter(|x| !x.is_empty())
                            .map(str::to_string)
                            .collect();
                        for x in &b {
                            crate::fs::names::check_bucket(x.as_bytes())
                                .map_err(|e| format!("line {n}: {e}"))?;
                        }
                        grant.buckets = Some(b);
                    }
                    other => return Err(format!("line {n}: unexpected {other:?}")),
                }
            }
            if keys.by_access.insert(access.to_string(), grant).is_some() {
                return Err(format!("line {n}: access key {access} given twice"));
            }
        }
        if keys.by_access.is_empty() {
            return Err("no keys in it (anonymous access is never allowed)".into());
        }
        Ok(keys)
    }

    /// The grant of `access`.
    pub fn grant(&self, access: &str) -> Option<&Grant> {
        self.by_access.get(access)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.by_access.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.by_access.is_empty()
    }
}

/// SigV4 secrets for s3s.
#[derive(Debug, Clone)]
pub struct Auth(pub Arc<Keys>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.grant(access_key) {
            Some(g) => Ok(SecretKey::from(g.secret.as_str())),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

/// Longest validity of a presigned URL (7 days, as S3).
const MAX_PRESIGN_SECS: u64 = 7 * 24 * 3600;

/// Operations a read-only key may run.
const READ_OPS: &[&str] = &[
    "ListBuckets",
    "HeadBucket",
    "GetBucketLocation",
    "ListObjects",
    "ListObjectsV2",
    "GetObject",
    "HeadObject",
    "ListParts",
    "ListMultipartUploads",
    "ListObjectVersions",
];

/// Rights per request: no anonymous requests, read-only keys only read,
/// bucket-limited keys only their buckets.
#[derive(Debug, Clone)]
pub struct Access(pub Arc<Keys>);

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(cred) = cx.credentials() else {
            return Err(s3_error!(
                AccessDenied,
                "anonymous requests are not allowed"
            ));
        };
        let Some(grant) = self.0.grant(&cred.access_key) else {
            return Err(s3_error!(InvalidAccessKeyId));
        };
        // presigned URLs live a week at most, as S3's: SigV4 gives the
        // validity, SigV2 the time it ends
        let param = |name: &str| {
            cx.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
                    .map(|v| v.parse::<u64>().unwrap_or(u64::MAX))
            })
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let v2_left = param("AWSAccessKeyId")
            .and(param("Expires"))
            .map(|end| end.saturating_sub(now));
        if param("X-Amz-Expires")
            .or(v2_left)
            .is_some_and(|e| e > MAX_PRESIGN_SECS)
        {
            return Err(s3_error!(
                AuthorizationQueryParametersError,
                "X-Amz-Expires must be less than a week (in seconds) that is 604800"
            ));
        }
        let op = cx.s3_op().name();
        if grant.read_only && !READ_OPS.contains(&op) {
            return Err(s3_error!(AccessDenied, "this access key is read-only"));
        }
        let bucket = match cx.s3_path() {
            S3Path::Root => None,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(bucket),
        };
        if let Some(b) = bucket {
            if !grant.may_use(b) {
                return Err(s3_error!(
                    AccessDenied,
                    "this access key may not use bucket {b}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rights() {
        let k = Keys::parse(
            "# comment\n\nAKIAONE secret-one\nAKIATWO secret-two ro\nAKIATHREE secret-3xx rw bkt-a,bkt-b\n",
        )
        .unwrap();
        assert_eq!(k.len(), 3);
        assert!(!k.grant("AKIAONE").unwrap().read_only);
        assert!(k.grant("AKIAONE").unwrap().may_use("anything"));
        assert!(k.grant("AKIATWO").unwrap().read_only);
        let g = k.grant("AKIATHREE").unwrap();
        assert!(g.may_use("bkt-a") && !g.may_use("bkt-c"));
    }

    #[test]
    fn refuses_bad_lines() {
        for bad in [
            "",
            "# only a comment\n",
            "AKIAONE\n",
            "AKIAONE short\n",
            "AK secret-long\n",
            "AKIAONE secret-one ro Bad_Bucket\n",
            "AKIAONE secret-one bkt-a extra\n",
            "AKIAONE secret-one\nAKIAONE secret-two\n",
        ] {
            assert!(Keys::parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! Name rules: components, keys and S3 bucket names.

use super::FsError;

/// Longest path component (Linux's NAME_MAX). Through the mount this is
/// the only length limit: a key (the path below the bucket) may be as long
/// as the kernel lets a path be, and deeper still through relative opens,
/// as on ext4.
pub const NAME_MAX: usize = 255;
/// Longest S3 object key in bytes. Not enforced through the mount: it is
/// for a future S3 interface, which must refuse (and cannot list) keys that
/// the mount accepted beyond it; see [`check_s3_key`].
pub const S3_KEY_MAX: usize = 1024;

/// The S3 endpoint's staging directory (`crate::s3`): a child of the root
/// whose name no bucket can have (check_bucket refuses a leading '.'), so
/// no FUSE program can create, rename onto or remove it; readdir and
/// lookup of the root do not show it. Objects being written over S3 live
/// here until a rename commits them under their key.
pub const S3_STAGING: &[u8] = b".s3-staging";

/// Check one path component.
pub fn check_component(name: &[u8]) -> Result<(), FsError> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(FsError::Invalid(format!(
            "invalid name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// Check a key (the '/'-separated path below the bucket) against S3's
/// 1024-byte limit. For a future S3 interface only: the mount never calls
/// it, since Linux programs may make longer paths (SEMANTICS.md,
/// "Namespace").
pub fn check_s3_key(key: &[u8]) -> Result<(), FsError> {
    if key.len() > S3_KEY_MAX {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

/// Check a bucket name against S3's rules; the error says which rule.
pub fn check_bucket(name: &[u8]) -> Result<(), String> {
    let s = std::str::from_utf8(name).map_err(|_| "bucket name is not UTF-8".to_string())?;
    if !(3..=63).contains(&s.len()) {
        return Err(format!("bucket name {s:?} must be 3 to 63 characters"));
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
    {
        return Err(format!(
            "bucket name {s:?} may hold only lowercase letters, digits, '-' and '.'"
        ));
    }
    let edge_ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !edge_ok(s.as_bytes()[0]) || !edge_ok(s.as_bytes()[s.len() - 1]) {
        return Err(format!(
            "bucket name {s:?} must start and end with a letter or digit"
        ));
    }
    if s.contains("..") {
        return Err(format!(
            "bucket name {s:?} must not contain two adjacent periods"
        ));
    }
    if s.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!("bucket name {s:?} must not be an IP address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_rules() {
        for ok in ["abc", "my-bucket.1", "0ab", &"a".repeat(63)] {
            assert!(check_bucket(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Abc",
            "-abc",
            "abc-",
            "a_b",
            "192.168.1.1",
            "a..b",
            "ab c",
        ] {
            assert!(check_bucket(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn components() {
        assert!(matches!(
            check_component(&[b'a'; 256]),
            Err(FsError::NameTooLong)
        ));
        assert!(check_component(&[b'a'; 255]).is_ok());
        assert!(check_component(b"a/b").is_err());
    }

    #[test]
    fn s3_keys_stop_at_1024_bytes() {
        assert!(check_s3_key(&[b'k'; S3_KEY_MAX]).is_ok());
        assert!(matches!(
            check_s3_key(&[b'k'; S3_KEY_MAX + 1]),
            Err(FsError::NameTooLong)
        ));
    }
}

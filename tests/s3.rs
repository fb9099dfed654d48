//! The S3 endpoint (`shardfs mount --s3-listen --s3-keys`) against a real
//! mount, driven by boto3 and aws-cli (installed by scripts/deps.sh): every
//! operation served, both doors on the same objects, bad input, the keys
//! file's checks, and the commit path across kill -9.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEYS: &str = "\
# tests/s3.rs keys
AKIAFULL secret-full-0001
AKIARO secret-ro-00001 ro
AKIABETA secret-beta-0001 rw beta
";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/s3")
        .join(name)
}

fn write_keys(dir: &Path, text: &str, mode: u32) -> PathBuf {
    let p = dir.join("s3.keys");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// The endpoint's address, from the daemon's log (it listens on port 0).
fn endpoint(t: &TestMount) -> String {
    let start = Instant::now();
    loop {
        let log = t.log_text();
        let lines: Vec<&str> = log.lines().collect();
        // the endpoint of this mount: logged after its session was made
        let mounting = lines
            .iter()
            .rposition(|l| l.contains("fuser::session] Mounting"));
        let ep = lines
            .iter()
            .rposition(|l| l.contains("S3 endpoint at http://"));
        if let (Some(m), Some(e)) = (mounting, ep) {
            if e > m {
                let url = lines[e].split("S3 endpoint at ").nth(1).unwrap();
                return url.split_whitespace().next().unwrap().to_string();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no S3 endpoint in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 4+2 pool with 64 KiB shards (objects of a few MiB span many
/// stripes), mounted with the S3 endpoint on a free loopback port.
fn s3_mount() -> (TestMount, String) {
    let mut t = TestMount::new(6, &["--shard-size", "65536"]);
    let keys = write_keys(t.tmp.path(), KEYS, 0o600);
    t.mount_args = vec![
        "--s3-listen".into(),
        "127.0.0.1:0".into(),
        "--s3-keys".into(),
        keys.to_string_lossy().into_owned(),
    ];
    t.remount();
    let e = endpoint(&t);
    (t, e)
}

fn python(args: &[&str]) -> (bool, String) {
    let out = Command::new("python3").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `aws` with the test's full key and an isolated config (path-style
/// addressing, no multipart below 64 MiB).
fn aws(t: &TestMount, ep: &str, args: &[&str]) -> (bool, String, String) {
    let cfg = t.tmp.path().join("aws-config");
    std::fs::write(
        &cfg,
        "[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n  multipart_threshold = 64MB\n",
    )
    .unwrap();
    let out = Command::new("aws")
        .arg("--endpoint-url")
        .arg(ep)
        .args(args)
        .env("AWS_CONFIG_FILE", &cfg)
        .env("AWS_SHARED_CREDENTIALS_FILE", t.tmp.path().join("none"))
        .env("AWS_ACCESS_KEY_ID", "AKIAFULL")
        .env("AWS_SECRET_ACCESS_KEY", "secret-full-0001")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn md5_of(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn boto3_every_operation_and_both_doors() {
    let (t, ep) = s3_mount();
    let mnt = t.mnt.to_string_lossy().into_owned();
    let (ok, out) = python(&[script("ops.py").to_str().unwrap(), &ep, &mnt]);
    assert!(ok, "tests/s3/ops.py failed:\n{out}");
    let last = out.lines().last().unwrap_or_default();
    let n: usize = last
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no closing line:\n{out}"));
    assert!(n >= 140, "only {n} checks ran:\n{out}");
    eprintln!("tests/s3/ops.py: {last}");
}

#[test]
fn aws_cli_against_the_mount() {
    let (t, ep) = s3_mount();
    let (ok, _, err) = aws(&t, &ep, &["s3", "mb", "s3://cli-bucket"]);
    assert!(ok, "mb: {err}");
    assert!(t.p("cli-bucket").is_dir());
    let local = t.tmp.path().join("upload.bin");
    std::fs::write(&local, pattern(3, 3 * 1024 * 1024 + 17)).unwrap();
    let (ok, _, err) = aws(
        &t,
        &ep,
        &[
            "s3",
            "cp",
            local.to_str().unwrap(),
            "s3://cli-bucket/dir/upload.bin",
        ],
    );
    assert!(ok, "cp up: {err}");
    // through the mount: the same bytes
    assert_eq!(
        std::fs::read(t.p("cli-bucket/dir/upload.bin")).unwrap(),
        std::fs::read(&local).unwrap()
    );
    let (ok, out, err) = aws(
        &t,
        &ep,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "cli-bucket",
            "--key",
            "dir/upload.bin",
        ],
    );
    assert!(ok, "head-object: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["ETag"].as_str().unwrap(),
        format!("\"{}\"", md5_of(&local))
    );
    assert_eq!(v["ContentLength"].as_u64().unwrap(), 3 * 1024 * 1024 + 17);
    // written through the mount, listed and fetched by aws-cli
    std::fs::write(t.p("cli-bucket/dir/fuse.txt"), b"made by FUSE\n").unwrap();
    let (ok, out, err) = aws(&t, &ep, &["s3", "ls", "--recursive", "s3://cli-bucket/"]);
    assert!(ok, "ls: {err}");
    assert!(
        out.contains("dir/upload.bin") && out.contains("dir/fuse.txt"),
        "{out}"
    );
    let back = t.tmp.path().join("fuse.txt");
    let (ok, _, err) = aws(
        &t,
        &ep,
        &[
            "s3",
            "cp",
            "s3://cli-bucket/dir/fuse.txt",
            back.to_str().unwrap(),
        ],
    );
    assert!(ok, "cp down: {err}");
    assert_eq!(std::fs::read(&back).unwrap(), b"made by FUSE\n");
    let (ok, out, err) = aws(
        &t,
        &ep,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "cli-bucket",
            "--prefix",
            "dir/f",
        ],
    );
    assert!(ok, "list-objects-v2: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = v["Contents"].as_array().unwrap();
    assert_eq!(c.len(), 1, "{out}");
    assert_eq!(
        c[0]["ETag"].as_str().unwrap(),
        format!("\"{}\"", md5_of(&back))
    );
    // sync a directory up, then remove everything
    let tree = t.tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("x/y")).unwrap();
    std::fs::write(tree.join("x/y/one"), b"1").unwrap();
    std::fs::write(tree.join("two"), b"22").unwrap();
    let (ok, _, err) = aws(
        &t,
        &ep,
        &["s3", "sync", tree.to_str().unwrap(), "s3://cli-bucket/tree"],
    );
    assert!(ok, "sync: {err}");
    assert_eq!(std::fs::read(t.p("cli-bucket/tree/x/y/one")).unwrap(), b"1");
    assert_eq!(std::fs::read(t.p("cli-bucket/tree/two")).unwrap(), b"22");
    let (ok, _, err) = aws(&t, &ep, &["s3", "rm", "--recursive", "s3://cli-bucket/"]);
    assert!(ok, "rm: {err}");
    // directories S3 made went with their objects
    let left: Vec<_> = std::fs::read_dir(t.p("cli-bucket"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let (ok, _, err) = aws(&t, &ep, &["s3", "rb", "s3://cli-bucket"]);
    assert!(ok, "rb: {err}");
    assert!(!t.p("cli-bucket").exists());
    // errors as aws-cli shows them
    let (ok, _, err) = aws(
        &t,
        &ep,
        &[
            "s3api",
            "get-object",
            "--bucket",
            "nobucket",
            "--key",
            "k",
            "/dev/null",
        ],
    );
    assert!(!ok && err.contains("NoSuchBucket"), "{err}");
}

#[test]
fn s3_writes_are_striped_like_fuse_writes() {
    let (t, ep) = s3_mount();
    let before = t.shard_files().len();
    // 1 MiB: past the inline limit, four stripes of 4 x 64 KiB
    let (ok, out) = python(&[
        script("put_get.py").to_str().unwrap(),
        &ep,
        "put",
        "coded",
        "obj",
        "1048576",
        "5",
    ]);
    assert!(ok, "{out}");
    let files = t.shard_files();
    let members: std::collections::BTreeSet<usize> = files.iter().map(|r| r.member).collect();
    assert_eq!(
        files.len() - before,
        4 * 6,
        "4 stripes of 4+2 shards: {files:?}"
    );
    assert_eq!(members.len(), 6, "shards on every member");
    // and the object reads back through both doors
    let (ok, got) = python(&[
        script("put_get.py").to_str().unwrap(),
        &ep,
        "get",
        "coded",
        "obj",
    ]);
    assert!(ok, "{got}");
    assert_eq!(got.split_whitespace().nth(1), Some("1048576"), "{got}");
    assert_eq!(
        got.split_whitespace().next(),
        out.split_whitespace().next(),
        "GET's MD5 is the PUT's ETag"
    );
    assert_eq!(
        md5_of(&t.p("coded/obj")),
        out.split_whitespace().next().unwrap()
    );
}

#[test]
fn acknowledged_put_survives_kill9() {
    let (mut t, ep) = s3_mount();
    let (ok, out) = python(&[
        script("put_get.py").to_str().unwrap(),
        &ep,
        "put",
        "durable",
        "k/obj",
        "700000",
        "9",
    ]);
    assert!(ok, "{out}");
    t.kill9();
    t.mount();
    let ep = endpoint(&t);
    let (ok, got) = python(&[
        script("put_get.py").to_str().unwrap(),
        &ep,
        "get",
        "durable",
        "k/obj",
    ]);
    assert!(ok, "{got}");
    assert_eq!(
        got.split_whitespace().collect::<Vec<_>>(),
        out.split_whitespace().collect::<Vec<_>>(),
        "the acknowledged object after kill -9"
    );
}

#[test]
fn staged_upload_cut_off_by_kill9_is_swept_and_never_seen() {
    let (mut t, ep) = s3_mount();
    std::fs::create_dir(t.p("slow")).unwrap();
    std::fs::write(t.p("slow/key"), b"old").unwrap();
    let mut child = Command::new("python3")
        .arg(script("slow_put.py"))
        .args([&ep, "slow", "key"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "sent");
    // the daemon has part of the body in the staging directory now; the
    // key still reads as before through the mount and the staging file is
    // in no listing
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read(t.p("slow/key")).unwrap(), b"old");
    let names: Vec<_> = std::fs::read_dir(t.p("slow"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("key")]);
    let root: Vec<_> = std::fs::read_dir(&t.mnt)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(root, vec![std::ffi::OsString::from("slow")]);
    t.kill9();
    let _ = child.kill();
    let _ = child.wait();
    t.mount();
    let ep = endpoint(&t);
    // swept at start, and the key is the old object
    let log = t.log_text();
    assert!(
        log.contains("S3: removed 1 staged uploads left by the last stop"),
        "{log}"
    );
    assert_eq!(std::fs::read(t.p("slow/key")).unwrap(), b"old");
    let (ok, got) = python(&[
        script("put_get.py").to_str().unwrap(),
        &ep,
        "get",
        "slow",
        "key",
    ]);
    assert!(ok, "{got}");
    assert_eq!(got.split_whitespace().nth(1), Some("3"), "{got}");
}

/// Mount with `args` and expect it to fail before mounting; the error.
fn mount_fails(t: &TestMount, args: &[&str]) -> String {
    let out = Command::new(SHARDFS)
        .arg("mount")
        .arg("--socket")
        .arg(&t.socket)
        .args(args)
        .args(&t.members)
        .arg(&t.mnt)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "mount {args:?} succeeded: {err}");
    assert!(!is_mounted(&t.mnt), "mounted despite {args:?}");
    err
}

#[test]
fn unsafe_keys_files_and_addresses_are_refused() {
    let mut t = TestMount::new(6, &[]);
    t.unmount();
    let dir = t.tmp.path().to_path_buf();
    let keys = write_keys(&dir, KEYS, 0o644);
    let k = keys.to_str().unwrap();
    let err = mount_fails(&t, &["--s3-listen", "127.0.0.1:0", "--s3-keys", k]);
    assert!(err.contains("chmod 600") && err.contains("0644"), "{err}");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&keys, Some(65534), None).unwrap();
    let err = mount_fails(&t, &["--s3-listen", "127.0.0.1:0", "--s3-keys", k]);
    assert!(err.contains("owned by uid 65534"), "{err}");
    std::os::unix::fs::chown(&keys, Some(0), None).unwrap();
    let empty = dir.join("empty.keys");
    std::fs::write(&empty, "# nothing\n").unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = mount_fails(
        &t,
        &[
            "--s3-listen",
            "127.0.0.1:0",
            "--s3-keys",
            empty.to_str().unwrap(),
        ],
    );
    assert!(err.contains("anonymous access is never allowed"), "{err}");
    let bad = write_keys(&dir, "AKIAONE short\n", 0o600);
    let err = mount_fails(
        &t,
        &[
            "--s3-listen",
            "127.0.0.1:0",
            "--s3-keys",
            bad.to_str().unwrap(),
        ],
    );
    assert!(err.contains("line 1"), "{err}");
    let keys = write_keys(&dir, KEYS, 0o600);
    let k = keys.to_str().unwrap();
    let err = mount_fails(&t, &["--s3-listen", "0.0.0.0:0", "--s3-keys", k]);
    assert!(
        err.contains("loopback") && err.contains("--s3-allow-remote"),
        "{err}"
    );
    let err = mount_fails(&t, &["--s3-listen", "127.0.0.1:0"]);
    assert!(err.contains("--s3-keys"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = taken.local_addr().unwrap().to_string();
    let err = mount_fails(&t, &["--s3-listen", &a, "--s3-keys", k]);
    assert!(err.contains(&a), "{err}");
    // and a good file mounts, serving the endpoint
    t.mount_args = vec![
        "--s3-listen".into(),
        "127.0.0.1:0".into(),
        "--s3-keys".into(),
        k.into(),
    ];
    t.mount();
    assert!(endpoint(&t).starts_with("http://127.0.0.1:"));
}

/// Detaches the mount point when dropped (the helper's daemon is detached:
/// it exits once its mount is gone).
struct Detach(PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            lazy_unmount(&self.0);
        }
    }
}

#[test]
fn mount_helper_takes_s3_options() {
    let tmp = tempfile::Builder::new()
        .prefix("shardfs-s3-helper")
        .tempdir()
        .unwrap();
    let members: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("d{i}"))).collect();
    let out = Command::new(SHARDFS)
        .args(["mkfs", "-k", "2", "-m", "1"])
        .args(&members)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _detach = Detach(mnt.clone());
    let keys = write_keys(tmp.path(), KEYS, 0o600);
    let log = tmp.path().join("daemon.log");
    let spec = members
        .iter()
        .map(|m| m.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "s3_listen=127.0.0.1:0,s3_keys={},socket={},log={}",
        keys.display(),
        tmp.path().join("ctl.sock").display(),
        log.display()
    );
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-helpers/mount.shardfs");
    let out = Command::new(helper)
        .env("SHARDFS_BIN", SHARDFS)
        .arg(&spec)
        .arg(&mnt)
        .args(["-o", &opts])
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "helper: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmd = text
        .lines()
        .find(|l| l.contains(" mount ") && l.contains("--s3-listen"))
        .unwrap_or_else(|| panic!("no S3 flags on the command line:\n{text}"));
    assert!(
        cmd.contains("--s3-listen 127.0.0.1:0") && cmd.contains("--s3-keys"),
        "{cmd}"
    );
    let start = Instant::now();
    let ep = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("S3 endpoint at http://")) {
            break l
                .split("S3 endpoint at ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (ok, put) = python(&[
        script("put_get.py").to_str().unwrap(),
        &ep,
        "put",
        "fstab",
        "obj",
        "100000",
        "1",
    ]);
    assert!(ok, "{put}");
    assert_eq!(
        md5_of(&mnt.join("fstab/obj")),
        put.split_whitespace().next().unwrap()
    );
    let out = Command::new("umount").arg(&mnt).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("unmounted cleanly")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no clean stop:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mp(ep: &str, args: &[&str]) -> String {
    let mut a = vec![
        script("mp.py").to_string_lossy().into_owned(),
        ep.to_string(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (ok, out) = python(&a);
    assert!(ok, "mp.py {args:?}: {out}");
    out.trim().to_string()
}

#[test]
fn multipart_uploads_outlive_a_restart_and_expire() {
    let (mut t, ep) = s3_mount();
    let id = mp(&ep, &["start", "parts", "big/obj"]);
    let e1 = mp(&ep, &["part", "parts", "big/obj", &id, "1", "5242880", "1"]);
    // parts live outside the bucket: nothing in it yet
    assert!(!t.p("parts/big").exists());
    t.remount();
    let ep = endpoint(&t);
    assert_eq!(
        mp(&ep, &["uploads", "parts"]),
        id,
        "the upload survives a restart"
    );
    let e2 = mp(&ep, &["part", "parts", "big/obj", &id, "2", "1000", "2"]);
    let etag = mp(
        &ep,
        &[
            "complete",
            "parts",
            "big/obj",
            &id,
            &format!("1:{e1}"),
            &format!("2:{e2}"),
        ],
    );
    assert!(etag.ends_with("-2\""), "{etag}");
    let data = std::fs::read(t.p("parts/big/obj")).unwrap();
    assert_eq!(data.len(), 5242880 + 1000);
    let want: Vec<u8> = (0..5242880usize)
        .map(|i| ((i * 17 + 1) % 253) as u8)
        .chain((0..1000usize).map(|i| ((i * 17 + 2) % 253) as u8))
        .collect();
    assert!(data == want, "completed object differs from its parts");
    assert_eq!(mp(&ep, &["uploads", "parts"]), "");
    // an upload older than --s3-upload-expiry-secs goes with its parts
    t.mount_args
        .extend(["--s3-upload-expiry-secs".to_string(), "2".to_string()]);
    t.remount();
    let ep = endpoint(&t);
    let old = mp(&ep, &["start", "parts", "stale"]);
    mp(&ep, &["part", "parts", "stale", &old, "1", "100000", "3"]);
    let start = Instant::now();
    while !mp(&ep, &["uploads", "parts"]).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "upload not expired:\n{}",
            t.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        t.log_text()
            .contains("S3: removed 1 multipart uploads older than 2s"),
        "{}",
        t.log_text()
    );
}

#[test]
fn aws_cli_multipart_copy() {
    let (t, ep) = s3_mount();
    let (ok, _, err) = aws(&t, &ep, &["s3", "mb", "s3://mp-cli"]);
    assert!(ok, "{err}");
    let local = t.tmp.path().join("big.bin");
    std::fs::write(&local, pattern(9, 20 * 1024 * 1024 + 3)).unwrap();
    // aws-cli goes multipart above its threshold: 8 MiB parts here
    let cfg = t.tmp.path().join("aws-mp-config");
    std::fs::write(
        &cfg,
        "[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n  multipart_threshold = 8MB\n  multipart_chunksize = 8MB\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("aws")
            .arg("--endpoint-url")
            .arg(&ep)
            .args(args)
            .env("AWS_CONFIG_FILE", &cfg)
            .env("AWS_SHARED_CREDENTIALS_FILE", t.tmp.path().join("none"))
            .env("AWS_ACCESS_KEY_ID", "AKIAFULL")
            .env("AWS_SECRET_ACCESS_KEY", "secret-full-0001")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["s3", "cp", local.to_str().unwrap(), "s3://mp-cli/big.bin"]);
    assert_eq!(md5_of(&t.p("mp-cli/big.bin")), md5_of(&local));
    let head = run(&[
        "s3api",
        "head-object",
        "--bucket",
        "mp-cli",
        "--key",
        "big.bin",
    ]);
    let v: serde_json::Value = serde_json::from_str(&head).unwrap();
    assert!(
        v["ETag"].as_str().unwrap().ends_with("-3\""),
        "three parts: {head}"
    );
    let back = t.tmp.path().join("back.bin");
    run(&["s3", "cp", "s3://mp-cli/big.bin", back.to_str().unwrap()]);
    assert_eq!(md5_of(&back), md5_of(&local));
    let ups = run(&["s3api", "list-multipart-uploads", "--bucket", "mp-cli"]);
    assert!(!ups.contains("UploadId"), "{ups}");
}

/// Peak resident memory of a process, KiB.
fn hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn rss_stays_flat_with_object_size() {
    let (t, ep) = s3_mount();
    let pid = t.child.as_ref().unwrap().id();
    // a small PUT and GET first: the endpoint's own buffers are counted in
    // the baseline
    let (ok, out) = python(&[
        script("put_get.py").to_str().unwrap(),
        &ep,
        "put",
        "warm",
        "up",
        "2000000",
        "1",
    ]);
    assert!(ok, "{out}");
    let before = hwm_kib(pid);
    let file = t.tmp.path().join("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 0..96u64 {
            f.write_all(&pattern(i, 1 << 20)).unwrap();
        }
    }
    let (ok, out) = python(&[
        script("big.py").to_str().unwrap(),
        &ep,
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let sums: Vec<&str> = out.split_whitespace().collect();
    let want = md5_of(&file);
    assert_eq!(sums, vec![want.as_str(), want.as_str()], "ETag and GET MD5");
    let after = hwm_kib(pid);
    // a 96 MiB object passed through in both directions: the peak grew by
    // far less than the object (1 MiB request buffers, a few stripes)
    assert!(
        after < before + 40 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB for a 96 MiB object"
    );
    eprintln!("peak RSS {before} KiB -> {after} KiB across a 96 MiB PUT and GET");
}

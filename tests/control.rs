//! The control socket and shardctl.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

fn raw(t: &TestMount, bytes: &[u8]) -> serde_json::Value {
    let mut s = UnixStream::connect(&t.socket).unwrap();
    // the daemon may close before reading all of an oversize frame
    let _ = s.write_all(bytes);
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn status_and_locate_in_tables_and_json() {
    let t = TestMount::new(6, &["--shard-size", "4096"]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    std::fs::write(t.p("bkt/small"), b"tiny").unwrap();
    std::fs::write(t.p("bkt/big"), pattern(1, 40_000)).unwrap();
    let (ok, out, err) = t.ctl(&["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("4+2") && out.contains("online"), "{out}");
    for m in &t.members {
        assert!(out.contains(&m.display().to_string()));
    }
    let (ok, out, _) = t.ctl(&["status", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["k"], 4);
    assert_eq!(v["m"], 2);
    assert_eq!(v["members"].as_array().unwrap().len(), 6);
    assert_eq!(v["stripes"], 40_000u64.div_ceil(16384));
    assert_eq!(v["degraded_stripes"], 0);
    assert!(v["objects"].as_u64().unwrap() >= 4);
    let (ok, out, _) = t.ctl(&["locate", "bkt/big", "--json"]);
    assert!(ok);
    let l: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(l["layout"], "striped");
    let stripes = l["stripes"].as_array().unwrap();
    assert_eq!(stripes.len(), 3);
    for s in stripes {
        let shards = s["shards"].as_array().unwrap();
        assert_eq!(shards.len(), 6);
        let mut members: Vec<u64> = shards
            .iter()
            .map(|x| x["member"].as_u64().unwrap())
            .collect();
        members.sort();
        members.dedup();
        assert_eq!(members.len(), 6, "distinct members");
        assert!(shards.iter().all(|x| x["ok"] == true));
    }
    let (ok, out, _) = t.ctl(&["locate", "bkt/small"]);
    assert!(ok);
    assert!(out.contains("inline"), "{out}");
    let (ok, _, err) = t.ctl(&["locate", "bkt/missing"]);
    assert!(!ok);
    assert!(err.contains("no such entry"), "{err}");
}

#[test]
fn garbage_oversize_and_wrong_version_get_error_replies_and_daemon_lives() {
    let t = TestMount::new(6, &[]);
    let mode = std::fs::metadata(&t.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let r = raw(&t, b"{not json\n");
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("malformed"));
    let r = raw(&t, b"{\"v\":99,\"cmd\":\"status\"}\n");
    assert!(r["error"].as_str().unwrap().contains("version 99"));
    let r = raw(&t, b"{\"v\":1,\"cmd\":\"explode\"}\n");
    assert_eq!(r["ok"], false);
    let r = raw(&t, b"{\"v\":1}\n");
    assert_eq!(r["ok"], false);
    let r = raw(&t, b"\xff\xfe\x00\n");
    assert_eq!(r["ok"], false);
    let mut big = vec![b'a'; 200 * 1024];
    big.push(b'\n');
    let r = raw(&t, &big);
    assert!(r["error"].as_str().unwrap().contains("larger than"));
    // a client that connects and says nothing does not stall others
    let _idle = UnixStream::connect(&t.socket).unwrap();
    let (ok, out, _) = t.ctl(&["status", "--json"]);
    assert!(ok, "daemon still answers");
    assert!(out.contains("pool_id"));
    // two requests on one connection
    let mut s = UnixStream::connect(&t.socket).unwrap();
    s.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n{\"v\":1,\"cmd\":\"locate\",\"path\":\"x\"}\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut l1 = String::new();
    let mut l2 = String::new();
    r.read_line(&mut l1).unwrap();
    r.read_line(&mut l2).unwrap();
    assert!(l1.contains("\"ok\":true"));
    assert!(l2.contains("\"ok\":false"));
}

#[test]
fn non_root_users_cannot_use_the_socket() {
    use std::os::unix::process::CommandExt;
    let t = TestMount::new(6, &[]);
    let out = std::process::Command::new(SHARDCTL)
        .arg("--socket")
        .arg(&t.socket)
        .arg("status")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Permission denied") || err.contains("may not use"),
        "{err}"
    );
}

/// Run `shardfs mount --socket SOCKET` over the pool's members; it must
/// fail before mounting. Returns stderr.
fn mount_fails_with_socket(t: &TestMount, socket: &std::path::Path) -> String {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let mut child = std::process::Command::new(SHARDFS)
        .arg("mount")
        .arg("--socket")
        .arg(socket)
        .args(&t.members)
        .arg(&t.mnt)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            lazy_unmount(&t.mnt);
            panic!("shardfs mount --socket {} did not exit", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    if is_mounted(&t.mnt) {
        lazy_unmount(&t.mnt);
        panic!("mounted with --socket {}", socket.display());
    }
    assert!(!st.success(), "mount succeeded: {err}");
    err
}

#[test]
fn a_non_socket_at_the_socket_path_is_never_deleted_and_foreign_or_loose_socket_dirs_are_refused() {
    use std::os::unix::fs::MetadataExt;
    let mut t = TestMount::new(6, &[]);
    t.unmount();
    // a regular file (say, an admin's notes) named as the socket
    let file = t.tmp.path().join("notes.sock");
    std::fs::write(&file, b"keep me").unwrap();
    let err = mount_fails_with_socket(&t, &file);
    assert!(
        err.contains("not a socket") && err.contains("never deletes"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    // a symlink there is not followed nor removed
    let link = t.tmp.path().join("link.sock");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let err = mount_fails_with_socket(&t, &link);
    assert!(err.contains("symlink"), "{err}");
    assert!(std::fs::symlink_metadata(&link).is_ok());
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    // a directory that another user owns (pre-created to catch the socket)
    let foreign = t.tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let err = mount_fails_with_socket(&t, &foreign.join("ctl.sock"));
    assert!(err.contains("belongs to uid 65534"), "{err}");
    assert!(!foreign.join("ctl.sock").exists());
    // a directory anyone may write (not sticky)
    let open = t.tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = mount_fails_with_socket(&t, &open.join("ctl.sock"));
    assert!(
        err.contains("mode 0777") && err.contains("chmod go-w"),
        "{err}"
    );
    // the default directory's stricter rule (owned by us, no group/other
    // write even with the sticky bit), as the daemon applies it to
    // /run/shardfs, $XDG_RUNTIME_DIR/shardfs or /tmp/shardfs-UID
    use shardfs::control::server::check_socket_dir;
    let me = std::fs::metadata(t.tmp.path()).unwrap().uid();
    let d = t.tmp.path().join("dflt");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(check_socket_dir(&d, true), Ok(()));
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(check_socket_dir(&d, true)
        .unwrap_err()
        .contains("mode 1777"));
    assert_eq!(check_socket_dir(&d, false), Ok(()), "sticky, explicit path");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
    assert!(check_socket_dir(&d, true)
        .unwrap_err()
        .contains("belongs to uid 65534"));
    std::os::unix::fs::chown(&d, Some(me), None).unwrap();
    let l = t.tmp.path().join("dflt-link");
    std::os::unix::fs::symlink(&d, &l).unwrap();
    assert!(check_socket_dir(&l, true).unwrap_err().contains("symlink"));
    // and a good path still mounts, replacing a stale socket
    t.mount();
    let (ok, _, err) = t.ctl(&["status"]);
    assert!(ok, "{err}");
    // a file put at the socket path while mounted survives the unmount:
    // the daemon removes only the very socket it bound
    std::fs::remove_file(&t.socket).unwrap();
    std::fs::write(&t.socket, b"put here later").unwrap();
    t.unmount();
    assert_eq!(std::fs::read(&t.socket).unwrap(), b"put here later");
    std::fs::remove_file(&t.socket).unwrap();
    // and the daemon's own socket is removed at a clean unmount
    t.mount();
    t.unmount();
    assert!(
        std::fs::symlink_metadata(&t.socket).is_err(),
        "socket left behind"
    );
}

#[test]
fn slow_clients_cannot_lock_the_admin_out_and_are_cut_off_at_the_deadline() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let t = TestMount::new(6, &[]);
    // 48 clients that connect and send nothing, 16 that send half a frame:
    // every connection slot the daemon has
    let mut silent = Vec::new();
    for _ in 0..48 {
        silent.push(UnixStream::connect(&t.socket).unwrap());
    }
    let mut half = Vec::new();
    for _ in 0..16 {
        let mut s = UnixStream::connect(&t.socket).unwrap();
        s.write_all(b"{\"v\":1,\"cmd\":\"sta").unwrap();
        half.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    // the admin still gets answers at once, more than once
    for _ in 0..3 {
        let start = Instant::now();
        let (ok, out, err) = t.ctl(&["status", "--json"]);
        assert!(ok, "admin locked out by slow clients: {err}");
        assert!(out.contains("pool_id"));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "status took {:?}",
            start.elapsed()
        );
    }
    // a half frame is answered with an error and closed by the deadline
    let start = Instant::now();
    let s = half.pop().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = String::new();
    let _ = (&s).read_to_string(&mut got);
    assert!(
        got.contains("no complete request within"),
        "half-frame client got {got:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    // so is a client trickling a byte at a time (the deadline is for the
    // whole frame, not per read)
    let mut s = UnixStream::connect(&t.socket).unwrap();
    let start = Instant::now();
    let mut cut = false;
    for b in b"{\"v\":1,\"cmd\":\"status\"}".iter().cycle().take(60) {
        if s.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut got = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut got);
    assert!(
        cut || got.contains("no complete request within"),
        "trickling client not cut off: {got:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(14));
    drop(silent);
    let (ok, _, err) = t.ctl(&["status"]);
    assert!(ok, "{err}");
}

/// A 4+2 pool of 7 members with a file of `stripes` stripes (16 KiB each)
/// spread over all of them.
fn seven_member_pool(stripes: usize) -> TestMount {
    let t = TestMount::new(7, &["--shard-size", "4096"]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    std::fs::write(t.p("bkt/f"), pattern(7, stripes * 16384)).unwrap();
    t
}

#[test]
fn disk_fail_and_drain_refuse_to_leave_a_stripe_with_fewer_than_k_plus_1_shards() {
    let mut t = seven_member_pool(60);
    t.unmount();
    // member 6 is gone; repair (throttled to a crawl) has not rebuilt its
    // shards yet, so stripes that had one there hold k+1 = 5
    std::fs::rename(&t.members[6], t.tmp.path().join("disk6.gone")).unwrap();
    t.mount_args = vec!["--repair-rate".into(), "1".into()];
    t.mount();
    let (ok, _, err) = t.ctl(&["disk", "fail", "0"]);
    assert!(!ok, "disk fail 0 accepted with member 6 missing");
    assert!(
        err.contains("fewer than k+1 = 5 readable shards") && err.contains("member 0"),
        "{err}"
    );
    let (ok, _, err) = t.ctl(&["disk", "drain", "1"]);
    assert!(!ok, "disk drain 1 accepted with member 6 missing");
    assert!(err.contains("fewer than k+1"), "{err}");
    let v = t.json(&["status"]);
    for m in &v["members"].as_array().unwrap()[..6] {
        assert_eq!(m["state"], "online", "{m}");
    }
    let back = std::fs::read(t.p("bkt/f")).unwrap();
    assert_eq!(back, pattern(7, 60 * 16384));
}

#[test]
fn two_concurrent_disk_fails_cannot_both_pass_the_redundancy_check() {
    let t = seven_member_pool(60);
    // slow repair, so the first failure is not mended in between
    let (ok, _, err) = t.ctl(&["repair", "rate", "1"]);
    assert!(ok, "{err}");
    let ctl = |id: &'static str| {
        let sock = t.socket.clone();
        std::thread::spawn(move || {
            std::process::Command::new(SHARDCTL)
                .arg("--socket")
                .arg(&sock)
                .args(["disk", "fail", id])
                .output()
                .unwrap()
        })
    };
    let a = ctl("0");
    let b = ctl("1");
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let oks = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(
        oks,
        1,
        "exactly one of two disk fails may pass: {} / {}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    let loser = if a.status.success() { &b } else { &a };
    assert!(String::from_utf8_lossy(&loser.stderr).contains("fewer than k+1"));
    let v = t.json(&["status"]);
    let failed = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "failed")
        .count();
    assert_eq!(failed, 1);
}

#[test]
fn locate_of_a_big_file_comes_in_pages() {
    let t = TestMount::new(6, &["--shard-size", "4096"]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    // 300 stripes of 16 KiB
    std::fs::write(t.p("bkt/big"), pattern(3, 300 * 16384)).unwrap();
    let page = shardfs::control::LOCATE_PAGE as usize;
    let r = raw(&t, b"{\"v\":1,\"cmd\":\"locate\",\"path\":\"bkt/big\"}\n");
    assert_eq!(r["ok"], true, "{r}");
    let stripes = r["result"]["stripes"].as_array().unwrap();
    assert_eq!(stripes.len(), page, "one page, not every stripe");
    assert_eq!(r["result"]["next"], page as u64);
    let r = raw(
        &t,
        format!("{{\"v\":1,\"cmd\":\"locate\",\"path\":\"bkt/big\",\"from\":{page},\"limit\":100000}}\n")
            .as_bytes(),
    );
    let stripes = r["result"]["stripes"].as_array().unwrap();
    assert_eq!(stripes.len(), 300 - page);
    assert_eq!(stripes[0]["stripe"], page as u64);
    assert!(r["result"]["next"].is_null());
    let r = raw(
        &t,
        b"{\"v\":1,\"cmd\":\"locate\",\"path\":\"bkt/big\",\"from\":10,\"limit\":5}\n",
    );
    let s: Vec<u64> = r["result"]["stripes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stripe"].as_u64().unwrap())
        .collect();
    assert_eq!(s, vec![10, 11, 12, 13, 14]);
    assert_eq!(r["result"]["next"], 15);
    // shardctl walks the pages: every stripe, once
    let l = t.json(&["locate", "bkt/big"]);
    let all: Vec<u64> = l["stripes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stripe"].as_u64().unwrap())
        .collect();
    assert_eq!(all, (0..300).collect::<Vec<u64>>());
    let (ok, out, err) = t.ctl(&["locate", "bkt/big"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("bkt/big: inode").count(), 1, "one heading");
    assert_eq!(out.matches("\nstripe ").count(), 300);
    assert!(out.contains("stripe 299 "));
}

#[test]
fn status_tells_parity_by_choice_from_reconstruction_shows_absent_members_and_human_times() {
    let mut t = TestMount::new(6, &["--shard-size", "4096", "--inline-max", "2048"]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..48u64)
        .map(|i| (format!("bkt/f{i}"), pattern(i, 16_384)))
        .collect();
    for (p, d) in &files {
        std::fs::write(t.p(p), d).unwrap();
    }
    let read_all = |t: &TestMount| {
        for (p, d) in &files {
            assert!(std::fs::read(t.p(p)).unwrap() == *d, "{p}");
        }
    };
    // member 2 a busy disk (5 IOPS): reads route around it by choice;
    // nothing is missing or bad
    t.unmount();
    t.mount_args = vec![
        "--emulate-hdd".into(),
        "2000:500".into(),
        "--emulate-member".into(),
        "2=5:50".into(),
    ];
    t.mount(); // a fresh mount: no page cache, reads reach the daemon
    read_all(&t);
    let v = t.json(&["status"]);
    assert!(
        v["parity_by_choice"].as_u64().unwrap() > 0,
        "no read chose parity: {v}"
    );
    assert_eq!(v["reconstructions"], 0, "nothing was missing: {v}");
    assert_eq!(v["bad_shards"], 0);
    // member 0 (a metadata replica) gone: reads now reconstruct by need
    t.unmount();
    t.mount_args.clear();
    std::fs::rename(&t.members[0], t.tmp.path().join("disk0.gone")).unwrap();
    t.mount();
    read_all(&t);
    let v = t.json(&["status"]);
    assert!(v["reconstructions"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["members"][0]["state"], "missing");
    assert_eq!(v["members"][0]["meta_replica"], "absent", "{v}");
    assert_eq!(v["members"][1]["meta_replica"], "healthy");
    let (ok, out, err) = t.ctl(&["status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("reconstructed because shards were missing or bad")
            && out.contains("served from parity by choice"),
        "{out}"
    );
    let row0 = out
        .lines()
        .find(|l| l.trim_start().starts_with("0  "))
        .unwrap_or_else(|| panic!("no row for member 0: {out}"));
    assert!(
        row0.contains("absent") && !row0.contains("healthy"),
        "{row0}"
    );
    // times for people: a local date, durations as 1h00m, no unix seconds
    let (ok, _, err) = t.ctl(&["repair", "start"]);
    assert!(ok, "{err}");
    let start = std::time::Instant::now();
    while t.json(&["repair", "status"])["passes"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(start.elapsed() < std::time::Duration::from_secs(60));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ok, out, err) = t.ctl(&["repair", "status"]);
    assert!(ok, "{err}");
    let today = sh(t.tmp.path(), "date +%F");
    assert!(
        out.contains(&format!("ended {}", today.trim())) && out.contains(" ago)"),
        "{out}"
    );
    assert!(!out.contains("unix time"), "{out}");
    let (ok, out, err) = t.ctl(&["tier", "status"]);
    assert!(ok, "{err}");
    assert!(out.contains("cold after 1h00m idle"), "{out}");
}

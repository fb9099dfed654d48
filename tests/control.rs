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

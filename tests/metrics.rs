//! Prometheus metrics through a real mount: `shardctl metrics` and the
//! HTTP listener (`shardfs mount --metrics-listen`), parsed with the
//! reference Python client's text parser (prometheus_client).

mod common;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Parse with prometheus_client and print the families as JSON. Stricter
/// than the parser alone: a sample outside its family (which the parser
/// turns into an untyped family of its own), a family without HELP or
/// TYPE, or a family twice, is an error.
const PARSE: &str = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
out = []
seen = set()
for f in text_string_to_metric_families(text):
    if f.type == "untyped" or f.type == "unknown":
        sys.exit("untyped family %s (a sample outside its family, or no TYPE): %r" % (f.name, f.samples[:3]))
    if not f.documentation:
        sys.exit("family %s has no HELP" % f.name)
    if f.name in seen:
        sys.exit("family %s twice" % f.name)
    seen.add(f.name)
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": repr(float(s.value))}
                            for s in f.samples]})
print(json.dumps(out))
"#;

fn python() -> &'static str {
    for p in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(p)
            .args(["-c", "import prometheus_client.parser"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return p;
        }
    }
    panic!(
        "no python3 with prometheus_client: run scripts/deps.sh \
         (apt-get install python3-prometheus-client)"
    );
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug)]
struct Family {
    kind: String,
    samples: Vec<Sample>,
}

/// Families by name (counters without `_total`, as the parser names them).
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut child = Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut fams = BTreeMap::new();
    for f in v.as_array().unwrap() {
        let samples = f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Sample {
                name: s["name"].as_str().unwrap().to_string(),
                labels: s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
                value: s["value"].as_str().unwrap().parse().unwrap(),
            })
            .collect();
        fams.insert(
            f["name"].as_str().unwrap().to_string(),
            Family {
                kind: f["type"].as_str().unwrap().to_string(),
                samples,
            },
        );
    }
    fams
}

fn family<'a>(f: &'a BTreeMap<String, Family>, name: &str, kind: &str) -> &'a Family {
    let fam = f
        .get(name)
        .unwrap_or_else(|| panic!("no family {name}; have {:?}", f.keys()));
    assert_eq!(fam.kind, kind, "type of {name}");
    fam
}

/// The value of sample `name` with labels `labels` (a subset).
fn value(f: &BTreeMap<String, Family>, fam: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let hits: Vec<&Sample> = f[fam]
        .samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(hits.len(), 1, "{name}{labels:?}: {hits:?}");
    hits[0].value
}

/// Address of the metrics listener, from the daemon's log (the last mount).
fn metrics_addr(t: &TestMount) -> String {
    let start = Instant::now();
    loop {
        let log = t.log_text();
        if let Some(l) = log.lines().rev().find(|l| l.contains("metrics at http://")) {
            let url = &l[l.find("http://").unwrap() + 7..];
            return url.trim_end().trim_end_matches("/metrics").to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no metrics address in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request; returns (status line, headers, body).
fn http(addr: &str, request: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

fn check_histograms(f: &BTreeMap<String, Family>) {
    let h = family(f, "shardfs_fuse_request_duration_seconds", "histogram");
    let mut per_op: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for s in &h.samples {
        let op = s.labels["op"].clone();
        if s.name.ends_with("_bucket") {
            let le: f64 = s.labels["le"].parse().unwrap();
            per_op.entry(op).or_default().push((le, s.value));
        } else if s.name.ends_with("_count") {
            counts.insert(op, s.value);
        } else if s.name.ends_with("_sum") {
            sums.insert(op, s.value);
        }
    }
    assert!(per_op.len() >= 20, "ops: {:?}", per_op.keys());
    for (op, buckets) in &per_op {
        assert!(buckets.len() >= 2, "{op}: {buckets:?}");
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{op}: buckets not increasing and cumulative: {buckets:?}"
        );
        let last = buckets.last().unwrap();
        assert!(last.0.is_infinite(), "{op}: last bucket le=+Inf");
        assert_eq!(last.1, counts[op], "{op}: +Inf bucket = _count");
        assert!(sums[op] >= 0.0);
        assert_eq!(sums[op] > 0.0, counts[op] > 0.0, "{op}: sum {}", sums[op]);
    }
    assert!(counts["read"] > 0.0, "FUSE reads counted");
    assert!(counts["write"] > 0.0, "FUSE writes counted");
    assert!(counts["lookup"] > 0.0, "FUSE lookups counted");
}

fn check(f: &BTreeMap<String, Family>, n: usize, read_bytes: u64) {
    // FUSE
    family(f, "shardfs_fuse_requests", "counter");
    let reads = value(
        f,
        "shardfs_fuse_requests",
        "shardfs_fuse_requests_total",
        &[("op", "read")],
    );
    assert!(reads > 0.0, "reads {reads}");
    let lookup_errors = value(
        f,
        "shardfs_fuse_errors",
        "shardfs_fuse_errors_total",
        &[("op", "lookup")],
    );
    assert!(lookup_errors >= 1.0, "ENOENT lookups: {lookup_errors}");
    assert_eq!(
        value(
            f,
            "shardfs_fuse_errors",
            "shardfs_fuse_errors_total",
            &[("op", "read")]
        ),
        0.0
    );
    let bytes = value(
        f,
        "shardfs_fuse_bytes",
        "shardfs_fuse_bytes_total",
        &[("op", "read")],
    );
    assert!(bytes >= read_bytes as f64, "{bytes} < {read_bytes}");
    check_histograms(f);

    // members
    let want: BTreeSet<String> = (0..n).map(|i| i.to_string()).collect();
    for (fam, kind) in [
        ("shardfs_member_ops", "counter"),
        ("shardfs_member_bytes", "counter"),
        ("shardfs_member_errors", "counter"),
        ("shardfs_member_inflight", "gauge"),
        ("shardfs_member_latency_seconds", "gauge"),
        ("shardfs_member_latency_p95_seconds", "gauge"),
        ("shardfs_member_utilisation_ratio", "gauge"),
        ("shardfs_member_load_seconds", "gauge"),
        ("shardfs_member_capacity_bytes", "gauge"),
        ("shardfs_member_free_bytes", "gauge"),
        ("shardfs_member_info", "gauge"),
    ] {
        let got: BTreeSet<String> = family(f, fam, kind)
            .samples
            .iter()
            .map(|s| s.labels["member"].clone())
            .collect();
        assert_eq!(got, want, "{fam}: member labels");
    }
    for i in 0..n {
        let m = i.to_string();
        let m = [("member", m.as_str())];
        let ops = value(f, "shardfs_member_ops", "shardfs_member_ops_total", &m);
        assert!(ops > 0.0, "member {i}: ops {ops}");
        let b = value(f, "shardfs_member_bytes", "shardfs_member_bytes_total", &m);
        assert!(b > 0.0, "member {i}: bytes {b}");
        let cap = value(
            f,
            "shardfs_member_capacity_bytes",
            "shardfs_member_capacity_bytes",
            &m,
        );
        let free = value(
            f,
            "shardfs_member_free_bytes",
            "shardfs_member_free_bytes",
            &m,
        );
        assert!(cap > 0.0 && free <= cap, "member {i}: {free} free of {cap}");
        let util = value(
            f,
            "shardfs_member_utilisation_ratio",
            "shardfs_member_utilisation_ratio",
            &m,
        );
        assert!(
            (0.0..=1.0).contains(&util),
            "member {i}: utilisation {util}"
        );
        let info = f["shardfs_member_info"]
            .samples
            .iter()
            .find(|s| s.labels["member"] == i.to_string())
            .unwrap();
        assert!(
            info.labels["path"].ends_with(&format!("disk{i}")),
            "{info:?}"
        );
        // exactly one state, and it is online
        let states: Vec<&Sample> = family(f, "shardfs_member_state", "gauge")
            .samples
            .iter()
            .filter(|s| s.labels["member"] == i.to_string())
            .collect();
        assert_eq!(states.len(), 6, "{states:?}");
        let on: Vec<&str> = states
            .iter()
            .filter(|s| s.value == 1.0)
            .map(|s| s.labels["state"].as_str())
            .collect();
        assert_eq!(on, ["online"], "member {i}");
        assert!(states.iter().all(|s| s.value == 0.0 || s.value == 1.0));
    }

    // pool
    for c in [
        "shardfs_pool_bad_shards",
        "shardfs_pool_reconstructions",
        "shardfs_pool_parity_reads_by_choice",
        "shardfs_pool_shards_written",
        "shardfs_pool_shards_read",
        "shardfs_pool_hedged_reads",
    ] {
        family(f, c, "counter");
    }
    assert!(
        value(
            f,
            "shardfs_pool_shards_written",
            "shardfs_pool_shards_written_total",
            &[]
        ) > 0.0
    );
    assert!(
        value(
            f,
            "shardfs_pool_shards_read",
            "shardfs_pool_shards_read_total",
            &[]
        ) > 0.0
    );
    assert_eq!(
        value(f, "shardfs_pool_patches", "shardfs_pool_patches_total", &[]),
        1.0
    );
    assert_eq!(
        value(f, "shardfs_pool_folds", "shardfs_pool_folds_total", &[]),
        0.0
    );
    assert_eq!(
        value(
            f,
            "shardfs_pool_bad_shards",
            "shardfs_pool_bad_shards_total",
            &[]
        ),
        0.0
    );
    family(f, "shardfs_pool_info", "gauge");
    let info = &f["shardfs_pool_info"].samples[0];
    assert_eq!(info.labels["k"], "4");
    assert_eq!(info.labels["m"], "2");
    let stripes = value(f, "shardfs_pool_stripes", "shardfs_pool_stripes", &[]);
    assert!(stripes >= 3.0, "stripes {stripes}");
    assert_eq!(
        value(
            f,
            "shardfs_pool_degraded_stripes",
            "shardfs_pool_degraded_stripes",
            &[]
        ),
        0.0
    );
    assert!(
        value(
            f,
            "shardfs_pool_usable_bytes",
            "shardfs_pool_usable_bytes",
            &[]
        ) > 0.0
    );

    // repair, scrub, rebalance, tier
    let tasks: BTreeSet<&str> = family(f, "shardfs_maintenance_running", "gauge")
        .samples
        .iter()
        .map(|s| s.labels["task"].as_str())
        .collect();
    assert_eq!(
        tasks,
        ["rebalance", "repair", "scrub", "tier"]
            .into_iter()
            .collect(),
        "tasks"
    );
    family(f, "shardfs_maintenance_passes", "counter");
    family(f, "shardfs_tier_moved_shards", "counter");
    family(f, "shardfs_tier_objects", "gauge");
    family(f, "shardfs_passthrough_enabled", "gauge");
    family(f, "shardfs_passthrough_opens", "counter");
    let events: BTreeSet<&str> = family(f, "shardfs_replica_events", "counter")
        .samples
        .iter()
        .map(|s| s.labels["event"].as_str())
        .collect();
    assert_eq!(
        events,
        ["built", "corrupt", "dropped"].into_iter().collect(),
        "replica events"
    );
    let limit = value(
        f,
        "shardfs_maintenance_rate_limit_bytes_per_second",
        "shardfs_maintenance_rate_limit_bytes_per_second",
        &[("task", "repair")],
    );
    assert_eq!(limit, (64u64 << 20) as f64);
    family(f, "shardfs_build_info", "gauge");
}

#[test]
fn metrics_via_shardctl_and_http_parse_and_count() {
    let mut t = TestMount::new(6, &["--shard-size", "4096"]);
    std::fs::create_dir(t.p("bkt")).unwrap();
    let big = pattern(7, 100_000);
    std::fs::write(t.p("bkt/big"), &big).unwrap();
    std::fs::write(t.p("bkt/small"), b"tiny").unwrap();
    // a fresh mount: nothing is in the page cache, so reads reach the daemon
    t.mount_args = vec!["--metrics-listen".into(), "127.0.0.1:0".into()];
    t.unmount();
    t.mount();
    assert_eq!(std::fs::read(t.p("bkt/big")).unwrap(), big);
    assert_eq!(std::fs::read(t.p("bkt/small")).unwrap(), b"tiny");
    assert!(std::fs::metadata(t.p("bkt/absent")).is_err());
    // a striped write after the mount: a shard on every member
    std::fs::write(t.p("bkt/new"), pattern(8, 50_000)).unwrap();
    // a small overwrite inside a committed stripe of it: one patch
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(t.p("bkt/new"))
            .unwrap();
        f.write_all_at(b"patched", 20_000).unwrap();
        f.sync_all().unwrap();
    }

    // shardctl metrics: the raw text
    let (ok, text, err) = t.ctl(&["metrics"]);
    assert!(ok, "{err}");
    assert!(text.starts_with("# HELP "), "{text}");
    assert!(text.ends_with('\n'));
    let fams = parse(&text);
    check(&fams, 6, big.len() as u64);

    // --json: the reply's result
    let (ok, out, err) = t.ctl(&["metrics", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let jtext = v["text"].as_str().unwrap();
    assert!(jtext.contains("# TYPE shardfs_fuse_request_duration_seconds histogram"));

    // HTTP
    let addr = metrics_addr(&t);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let (status, headers, body) = http(
        &addr,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    let ctype = headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_else(|| panic!("no Content-Type: {headers}"));
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let len: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, body.len());
    let hfams = parse(&body);
    check(&hfams, 6, big.len() as u64);
    assert_eq!(
        fams.keys().collect::<Vec<_>>(),
        hfams.keys().collect::<Vec<_>>(),
        "the same families over both"
    );
    // counters only go up between the two scrapes
    let r1 = value(
        &fams,
        "shardfs_fuse_requests",
        "shardfs_fuse_requests_total",
        &[("op", "getattr")],
    );
    let r2 = value(
        &hfams,
        "shardfs_fuse_requests",
        "shardfs_fuse_requests_total",
        &[("op", "getattr")],
    );
    assert!(r2 >= r1);

    let (status, _, _) = http(&addr, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, _, _) = http(&addr, "GET /other HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, headers, _) = http(
        &addr,
        "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(status.starts_with("HTTP/1.1 405"), "{status}");
    assert!(headers.contains("Allow: GET"), "{headers}");
    let (status, _, body) = http(&addr, "HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.is_empty());
    // still serving after all that
    let (status, _, body) = http(&addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    parse(&body);
    t.unmount();
}

/// Run `shardfs mount` with `args` and the pool's members; it must fail
/// before mounting. Returns stderr.
fn mount_fails(t: &TestMount, args: &[&str]) -> String {
    let socket = t.tmp.path().join("refused.sock");
    let mut child = Command::new(SHARDFS)
        .arg("mount")
        .arg("--socket")
        .arg(&socket)
        .args(args)
        .args(&t.members)
        .arg(&t.mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
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
            panic!("shardfs mount {args:?} did not exit");
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
    assert!(!st.success(), "mount {args:?} succeeded: {err}");
    assert!(!is_mounted(&t.mnt), "mounted despite {args:?}");
    assert!(!socket.exists(), "control socket left by {args:?}");
    err
}

#[test]
fn metrics_listen_refuses_other_than_loopback() {
    let mut t = TestMount::new(6, &[]);
    t.unmount();
    let err = mount_fails(&t, &["--metrics-listen", "0.0.0.0:0"]);
    assert!(
        err.contains("0.0.0.0:0") && err.contains("loopback"),
        "{err}"
    );
    let err = mount_fails(&t, &["--metrics-listen", "[::]:9108"]);
    assert!(err.contains("loopback"), "{err}");
    let err = mount_fails(&t, &["--metrics-listen", "localhost"]);
    assert!(err.contains("--metrics-listen"), "{err}");
    // a port already taken fails the mount too
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = taken.local_addr().unwrap().to_string();
    let err = mount_fails(&t, &["--metrics-listen", &a]);
    assert!(err.contains(&a) && err.contains("in use"), "{err}");
    // and the pool still mounts without it
    t.mount();
    let (ok, text, err) = t.ctl(&["metrics"]);
    assert!(ok, "{err}");
    parse(&text);
}

#[test]
fn slow_http_clients_do_not_stall_concurrent_scrapes() {
    let mut t = TestMount::new(6, &[]);
    t.mount_args = vec!["--metrics-listen".into(), "127.0.0.1:0".into()];
    t.remount();
    let addr = metrics_addr(&t);
    // clients that connect and send nothing, or half a request head, or
    // ask and never read the answer: more than the server's connection cap
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(TcpStream::connect(&addr).unwrap());
    }
    for _ in 0..4 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /metr").unwrap();
        slow.push(s);
    }
    let mut never_reads = TcpStream::connect(&addr).unwrap();
    never_reads
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // eight scrapes at once all answer, promptly
    let start = Instant::now();
    let scrapes: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let r = http(&addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
                (r, t0.elapsed())
            })
        })
        .collect();
    for s in scrapes {
        let ((status, _, body), took) = s.join().unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert!(body.contains("shardfs_pool_info"), "{body}");
        assert!(took < Duration::from_secs(3), "scrape took {took:?}");
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    // an idle client is closed by the head deadline, not kept forever
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let _ = idle.read_to_end(&mut buf);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "idle connection kept {:?}",
        t0.elapsed()
    );
    drop(slow);
    drop(never_reads);
    let (status, _, _) = http(&addr, "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

#!/usr/bin/env bash
# Bytes and syncs the daemon issues per fsync'd sqlite transaction, by kind
# of file (patch logs, metadata WAL, shard files...), measured with strace
# over the transaction phase only. The workload is the peer baseline's
# sqlitetx (rollback journal, synchronous=full, 10 random 1000-byte row
# updates per transaction on a 50,000-row database). Counts, not times:
# they hold on a noisy machine.
#
#   bench/sqlite-io.sh            # TX=300
set -euo pipefail
cd "$(dirname "$0")/.."
command -v strace >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; }
cargo build --release --bins -q
B=$PWD/target/release/shardfs
TX=${TX:-300}
W=$(mktemp -d /tmp/shardfs-sqlio.XXXXXX)
M=$W/mnt
mkdir -p "$M" "$W"/d{0..5} "$W/trace"
cleanup() {
  mountpoint -q "$M" && fusermount3 -u "$M"
  [ -n "${pid:-}" ] && while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -rf "$W"
}
trap cleanup EXIT
"$B" mkfs "$W"/d{0..5} > /dev/null
"$B" mount --socket "$W/sock" "$W"/d{0..5} "$M" > "$W/log" 2>&1 &
pid=$!
for _ in $(seq 100); do mountpoint -q "$M" && break; sleep 0.1; done
mkdir "$M/bkt"
cat > "$W/tx.py" <<'PY'
import os, random, sqlite3, sys, time
d, rows, tx, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.makedirs(d, exist_ok=True)
db = sqlite3.connect(os.path.join(d, "bench.db"), isolation_level=None)
db.execute("pragma journal_mode=delete"); db.execute("pragma synchronous=full")
db.execute("create table t(id integer primary key, v blob)")
db.execute("begin")
db.executemany("insert into t values(?, randomblob(1000))", ((i,) for i in range(rows)))
db.execute("commit")
open(go, "w").close(); time.sleep(1.5)   # the tracer attaches here
rnd = random.Random(1); t0 = time.monotonic()
for _ in range(tx):
    db.execute("begin")
    for _ in range(10):
        db.execute("update t set v = randomblob(1000) where id = ?", (rnd.randrange(rows),))
    db.execute("commit")
dt = time.monotonic() - t0
assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
print(f"{tx / dt:.1f} tx/s under strace (slowed; not a speed figure)")
PY
( while [ ! -f "$W/go" ]; do sleep 0.1; done
  exec strace -ff -y -e trace=write,pwrite64,pwritev,writev,fdatasync,fsync -p $pid -o "$W/trace/t" 2>/dev/null ) &
spid=$!
python3 "$W/tx.py" "$M/bkt/sql" 50000 "$TX" "$W/go"
sleep 0.5; kill -INT $spid 2>/dev/null || true; wait $spid 2>/dev/null || true
"$PWD/target/release/shardctl" --socket "$W/sock" metrics | grep -E '^shardfs_pool_(patches|merged_patches|full_patch_rewrites|folds)_total'
TX=$TX python3 - "$W" <<'PY'
import collections, glob, os, re, sys
w = sys.argv[1]; tx = int(os.environ["TX"])
def kind(p):
    p = re.sub(r'^' + re.escape(w) + r'/d\d/', '', p)
    return re.sub(r'^(shards|patches)/.*', r'\1/*', p)
byt = collections.defaultdict(lambda: [0, 0]); syn = collections.Counter()
for f in glob.glob(w + "/trace/t.*"):
    for l in open(f):
        m = re.search(r'^(fdatasync|fsync)\(\d+<([^>]*)>', l)
        if m: syn[kind(m[2])] += 1; continue
        m = re.search(r'^(?:write|pwrite64|pwritev|writev)\(\d+<([^>]*)>.*= (\d+)$', l)
        if m: e = byt[kind(m[1])]; e[0] += 1; e[1] += int(m[2])
print(f"per transaction ({tx}):")
for k, (n, b) in sorted(byt.items(), key=lambda x: -x[1][1]):
    if b / tx >= 1024: print(f"  {k:16} {n / tx:6.1f} writes {b / tx / 1024:8.1f} KiB")
for k, n in syn.most_common():
    if n / tx >= 0.1: print(f"  {k:16} {n / tx:6.1f} syncs")
PY

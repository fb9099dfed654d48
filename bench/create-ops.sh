#!/usr/bin/env bash
# What one small-file create costs inside shardfs: a fresh 4+2 pool over six
# directories, N files of 4 KiB written by a python loop (open O_CREAT|
# O_WRONLY|O_TRUNC, write, close; 100 per directory, as the peer baseline's
# smallfiles.py), then per file: FUSE requests by operation, the daemon's
# time in each (handler time, not the kernel round trip) and metadata
# commits, from the daemon's metrics. Counts hold on a loaded machine;
# times do not. Run benchmarks one at a time (flock /tmp/bench.lock ...).
#
#   bench/create-ops.sh            # N=2000
#   N=5000 BIN=/path/to/shardfs bench/create-ops.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/shardfs}
N=${N:-2000}
PORT=${PORT:-19188}
M=$(mktemp -d /tmp/shardfs-create-ops.XXXXXX)
mkdir -p "$M/mnt"
"$BIN" mkfs "$M"/d{1..6} >/dev/null
"$BIN" mount --socket "$M/sock" --metrics-listen "127.0.0.1:$PORT" "$M"/d{1..6} "$M/mnt" > "$M/log" 2>&1 &
pid=$!
trap 'fusermount3 -u "$M/mnt" 2>/dev/null; wait $pid; rm -rf "$M"' EXIT
for _ in $(seq 100); do mountpoint -q "$M/mnt" && break; sleep 0.1; done
mkdir "$M/mnt/bench"
curl -s "127.0.0.1:$PORT/metrics" > "$M/m0"
python3 - "$M/mnt/bench/sf" "$N" <<'PY'
import os, sys, time
root, n = sys.argv[1], int(sys.argv[2])
buf = os.urandom(4096)
for d in range((n + 99) // 100):
    os.makedirs(f"{root}/d{d:03d}", exist_ok=True)
t0 = time.monotonic()
for i in range(n):
    fd = os.open(f"{root}/d{i // 100:03d}/f{i:06d}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, buf)
    os.close(fd)
dt = time.monotonic() - t0
print(f"{n / dt:.0f} files/s, {dt * 1e6 / n:.0f} us per file")
PY
curl -s "127.0.0.1:$PORT/metrics" > "$M/m1"
python3 - "$M/m0" "$M/m1" "$N" <<'PY'
import re, sys
def load(f):
    d = {}
    for l in open(f):
        m = re.match(r'(\S+) (\S+)$', l.strip())
        if m and not l.startswith('#'):
            d[m.group(1)] = float(m.group(2))
    return d
a, b, n = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
req = re.compile(r'shardfs_fuse_requests_total\{op="(\w+)"\}')
dur = 'shardfs_fuse_request_duration_seconds_sum{op="%s"}'
print(f"{'per file':<12}{'requests':>10}{'daemon us':>11}")
for k in sorted(b):
    m = req.fullmatch(k)
    if m and b[k] - a.get(k, 0) > 0:
        op = m.group(1)
        us = (b.get(dur % op, 0) - a.get(dur % op, 0)) * 1e6 / n
        print(f"{op:<12}{(b[k] - a.get(k, 0)) / n:>10.3f}{us:>11.1f}")
k = 'shardfs_meta_commits_total'
print(f"{'commits':<12}{(b.get(k, 0) - a.get(k, 0)) / n:>10.3f}")
PY

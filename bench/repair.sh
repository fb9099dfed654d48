#!/usr/bin/env bash
# Repair benchmark, one run, on one machine's disk:
#  1. raw sequential write rate of a plain directory on the same filesystem
#     (fio, 1 MiB blocks, fsync at the end): the baseline;
#  2. rebuild rate after a member fails (unlimited rate): stripe bytes
#     re-protected per second and shard bytes written per second, and the
#     latter as a fraction of the raw rate;
#  3. foreground sequential read throughput with no repair, and during a
#     repair at the default rate limit (64 MiB/s).
#
#   bench/repair.sh                 # DATA=2G of files, 8 members (4+2)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
command -v fio >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null; }
cargo build --release --bins >/dev/null 2>&1
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SHARDFS=$TARGET/release/shardfs
CTL=$TARGET/release/shardctl
DATA=${DATA:-2G}
W=${SCRATCH:-/tmp/shardfs-repair-bench}
rm -rf "$W"; mkdir -p "$W/mnt" "$W/raw"
cleanup() { fusermount3 -u "$W/mnt" 2>/dev/null || umount -l "$W/mnt" 2>/dev/null || true; }
trap cleanup EXIT

mib_per_s() { # fio json -> MiB/s of the first job, read or write
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; k=sys.argv[2]; print(round(j[k]["bw_bytes"]/2**20,1))' "$1" "$2"
}

echo "== raw directory, sequential write ($DATA, 1 MiB, end_fsync)"
fio --name=raw --directory="$W/raw" --rw=write --bs=1M --size="$DATA" --end_fsync=1 \
    --ioengine=psync --output-format=json > "$W/raw.json"
RAW=$(mib_per_s "$W/raw.json" write)
rm -rf "$W/raw"
echo "raw write: $RAW MiB/s"

"$SHARDFS" mkfs "$W"/d{0..7} >/dev/null
start_daemon() {
  "$SHARDFS" mount --socket "$W/sock" --repair-rate "$1" "$W"/d{0..7} "$W/mnt" > "$W/daemon.log" 2>&1 &
  for _ in $(seq 100); do [ -S "$W/sock" ] && mountpoint -q "$W/mnt" && return; sleep 0.1; done
  echo "daemon did not start"; cat "$W/daemon.log"; exit 1
}
start_daemon 0
mkdir "$W/mnt/bench"
echo "== writing $DATA of files"
fio --name=files --directory="$W/mnt/bench" --rw=write --bs=1M --size="$DATA" --nrfiles=8 \
    --end_fsync=1 --ioengine=psync --output-format=json > "$W/fill.json"
echo "fill write: $(mib_per_s "$W/fill.json" write) MiB/s"

wait_repair() { # prints seconds until the pass after a request ends
  local t0 now
  t0=$(date +%s.%N)
  while :; do
    local p; p=$("$CTL" --socket "$W/sock" --json repair status)
    if python3 -c 'import json,sys; p=json.loads(sys.argv[1]); sys.exit(0 if (not p["running"] and p["passes"]>=int(sys.argv[2]) and p["remaining"]==0) else 1)' "$p" "$1"; then
      break
    fi
    sleep 0.2
  done
  now=$(date +%s.%N)
  python3 -c "print(round($now-$t0,2))"
}

echo "== member 3 fails: rebuild at full speed"
"$CTL" --socket "$W/sock" disk fail 3 >/dev/null
SECS=$(wait_repair 1)
P=$("$CTL" --socket "$W/sock" --json repair status)
read -r STRIPE_BYTES SHARDS <<<"$(python3 -c 'import json,sys; p=json.loads(sys.argv[1]); print(p["bytes_done"], p["shards"])' "$P")"
SHARD_MIB=$(python3 -c "print(round($SHARDS*1024*1024/2**20/$SECS,1))")  # default shard size 1 MiB
STRIPE_MIB=$(python3 -c "print(round($STRIPE_BYTES/2**20/$SECS,1))")
echo "rebuilt $SHARDS shards in $SECS s: $SHARD_MIB MiB/s of shards written," \
     "$STRIPE_MIB MiB/s of stripes re-protected;" \
     "$(python3 -c "print(round($SHARD_MIB/$RAW,2))")x the raw directory's write rate"

echo "== foreground sequential read, no repair running"
fio --name=files --directory="$W/mnt/bench" --rw=read --bs=1M --size="$DATA" --nrfiles=8 \
    --ioengine=psync --output-format=json --time_based --runtime=10 > "$W/read0.json"
R0=$(mib_per_s "$W/read0.json" read)
echo "read: $R0 MiB/s"

echo "== foreground sequential read while member 4 is rebuilt at the default limit (64 MiB/s)"
"$CTL" --socket "$W/sock" repair rate 64M >/dev/null
"$CTL" --socket "$W/sock" disk fail 4 >/dev/null
fio --name=files --directory="$W/mnt/bench" --rw=read --bs=1M --size="$DATA" --nrfiles=8 \
    --ioengine=psync --output-format=json --time_based --runtime=10 > "$W/read1.json"
R1=$(mib_per_s "$W/read1.json" read)
P=$("$CTL" --socket "$W/sock" --json repair status)
RUNNING=$(python3 -c 'import json,sys; p=json.loads(sys.argv[1]); print("still running" if p["running"] else "finished during the read")' "$P")
echo "read during repair: $R1 MiB/s ($(python3 -c "print(round($R1/$R0,2))")x of no repair; repair $RUNNING)"

echo
echo "| metric | value | baseline | ratio |"
echo "|---|---:|---:|---:|"
echo "| rebuild, shard bytes written | $SHARD_MIB MiB/s | raw dir write $RAW MiB/s | $(python3 -c "print(round($SHARD_MIB/$RAW,2))") |"
echo "| rebuild, stripes re-protected | $STRIPE_MIB MiB/s | | |"
echo "| seq read during repair (64 MiB/s limit) | $R1 MiB/s | no repair $R0 MiB/s | $(python3 -c "print(round($R1/$R0,2))") |"

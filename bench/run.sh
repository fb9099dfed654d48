#!/usr/bin/env bash
# shardfs beside its baselines, in one run, on the same 6 directories:
# fio sequential write/read (1 MiB, FIO_SIZE), 4 KiB random reads, 10,000
# small files (create+write+close, stat, read), ls -lR, a tar extract.
# Peers: mergerfs-off and mergerfs-partial (FUSE without coding) and raw
# ext4, through ../shared/bench/peer-baseline.sh, with shardfs as its `cmd`
# peer. Prints the table with ratios and the daemon's peak RSS.
#
#   bench/run.sh                       # RUNS=1 PEERS="raw mergerfs-off mergerfs-partial cmd"
#   RUNS=3 FIO_SIZE=2G bench/run.sh    # medians of 3 rounds
#   ONLY=sf PEERS="mergerfs-off cmd" RUNS=3 bench/run.sh
#       only the small-file, ls -lR and tar rows: the fio and sqlite steps
#       of the workload shrink to a token size (8 MiB, 1 s, 1,000 rows) and
#       their rows, the CPU-per-GiB and the sequential-write RSS are left out
# The binary is built into $CARGO_TARGET_DIR (default ./target); SHARDFS_BIN=PATH
# measures another binary instead (A/B runs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PB=${PEER_BASELINE:-$ROOT/../shared/bench/peer-baseline.sh}
[ -x "$PB" ] || PB="bash $PB"
command -v fio >/dev/null && command -v mergerfs >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio mergerfs fuse3 >/dev/null; }
cargo build --release --bins
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export ONLY=${ONLY:-}
case $ONLY in
  "") ;;
  sf) export FIO_SIZE=8M RR_SECS=1 SQL_ROWS=1000 SQL_TX=5 ;;
  *) echo "ONLY is sf or empty, not $ONLY" >&2; exit 2 ;;
esac
export SCRATCH=${SCRATCH:-/tmp/shardfs-bench}
export RES=${RES:-/tmp/shardfs-bench-results}
export RUNS=${RUNS:-1}
export PEERS=${PEERS:-"raw mergerfs-off mergerfs-partial cmd"}
export FIO_SIZE=${FIO_SIZE:-2G}
export PEER_SUBDIR=bench
export SHARDFS_BIN=${SHARDFS_BIN:-$TARGET_DIR/release/shardfs}
export RSS_FILE=$RES/shardfs-peak-rss.txt
mkdir -p "$RES"
rm -f "$RSS_FILE" "$RES/results.tsv"
# setup: a 4+2 pool over the six fresh directories, mounted in the background
export PEER_SETUP='"$SHARDFS_BIN" mkfs $DISK_DIRS && { nohup "$SHARDFS_BIN" mount --socket "$SCRATCH/shardfs.sock" $DISK_DIRS "$MOUNTPOINT" > "$RES/shardfs-daemon.log" 2>&1 & echo $! > "$SCRATCH/shardfs.pid"; }'
# teardown: record the daemon peak RSS (VmHWM covers the whole run,
# including the sequential write), then unmount and wait for the exit
export PEER_TEARDOWN='pid=$(cat "$SCRATCH/shardfs.pid"); echo "whole run: $(grep -E "VmHWM|RssAnon|RssFile" /proc/$pid/status | tr -s " \t" " " | tr "\n" " ")" >> "$RSS_FILE"; fusermount3 -u "$MOUNTPOINT"; while kill -0 $pid 2>/dev/null; do sleep 0.1; done'
$PB run
# CPU seconds (user + system) of a process, from /proc/PID/stat
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
CPU_FILE=$RES/cpu-per-gib.txt
rm -f "$CPU_FILE"
# Peak RSS and CPU per GiB during the sequential write alone: a fresh pool,
# one fio run; the same write through mergerfs (cache.files=off) beside it.
if [[ " $PEERS " == *" cmd "* && -z $ONLY ]]; then
  gib=$(python3 -c "import re,sys; s='$FIO_SIZE'; n=float(re.sub('[^0-9.]','',s)); u=s[-1].upper(); print(n/1024 if u=='M' else n*1024 if u=='T' else n)")
  M=$SCRATCH/cpu-mfs; rm -rf "$M"; mkdir -p "$M"/d{1..6} "$M/mnt"
  mergerfs -f -o allow_other,use_ino,cache.files=off,category.create=mfs "$M/d1:$M/d2:$M/d3:$M/d4:$M/d5:$M/d6" "$M/mnt" &
  mpid=$!
  for _ in $(seq 100); do mountpoint -q "$M/mnt" && break; sleep 0.1; done
  c0=$(cpu_s $mpid)
  fio --ioengine=psync --direct=0 --fallocate=none --numjobs=1 --name=seqwrite \
    --filename="$M/mnt/seq" --rw=write --bs=1M --size="$FIO_SIZE" --end_fsync=1 > /dev/null
  c1=$(cpu_s $mpid)
  echo "mergerfs-off: $(awk -v a=$c0 -v b=$c1 -v g=$gib 'BEGIN {printf "%.2f", (b - a) / g}') CPU-s per GiB written ($FIO_SIZE)" >> "$CPU_FILE"
  fusermount3 -u "$M/mnt"; wait $mpid || true
  rm -rf "$M"
fi
if [[ " $PEERS " == *" cmd "* && -z $ONLY ]]; then
  R=$SCRATCH/rss; rm -rf "$R"; mkdir -p "$R/mnt"
  "$SHARDFS_BIN" mkfs "$R"/d{1..6} >/dev/null
  "$SHARDFS_BIN" mount --socket "$R/sock" "$R"/d{1..6} "$R/mnt" > "$R/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do mountpoint -q "$R/mnt" && break; sleep 0.1; done
  mkdir "$R/mnt/bench"
  c0=$(cpu_s $pid)
  fio --ioengine=psync --direct=0 --fallocate=none --numjobs=1 --name=seqwrite \
    --filename="$R/mnt/bench/seq" --rw=write --bs=1M --size="$FIO_SIZE" --end_fsync=1 > /dev/null
  c1=$(cpu_s $pid)
  echo "shardfs: $(awk -v a=$c0 -v b=$c1 -v g=$gib 'BEGIN {printf "%.2f", (b - a) / g}') CPU-s per GiB written ($FIO_SIZE)" >> "$CPU_FILE"
  echo "sequential write ($FIO_SIZE): $(grep -E "VmHWM" /proc/$pid/status | tr -s " \t" " ")" >> "$RSS_FILE"
  fusermount3 -u "$R/mnt"; wait $pid || true
  rm -rf "$R"
fi
$PB summarize >/dev/null || true
python3 - "$RES/results.tsv" "$RSS_FILE" "$CPU_FILE" <<'PY'
import os, sys, statistics, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
vals = collections.defaultdict(list); units = {}
for r in rows:
    if len(r) < 6: continue
    try: v = float(r[4])
    except ValueError: continue
    vals[(r[2], r[3])].append(v); units[r[3]] = r[5]
peers = [p for p in ["raw", "mergerfs-off", "mergerfs-partial", "cmd"] if any(k[0] == p for k in vals)]
metrics = list(dict.fromkeys(k[1] for k in vals))
if os.environ.get("ONLY") == "sf":
    metrics = [m for m in metrics if m.startswith(("sf_", "lsR_", "tar_"))]
lower_better = {"s", "us"}
print(f"{'metric':<22}{'unit':<9}" + "".join(f"{('shardfs' if p=='cmd' else p):>18}" for p in peers)
      + f"{'shardfs/mfs-off':>17}{'shardfs/mfs-part':>18}")
for m in metrics:
    med = {p: statistics.median(vals[(p, m)]) for p in peers if (p, m) in vals}
    line = f"{m:<22}{units[m]:<9}" + "".join(f"{med.get(p, float('nan')):>18.1f}" for p in peers)
    for base in ["mergerfs-off", "mergerfs-partial"]:
        if "cmd" in med and base in med and med[base] > 0:
            r = med["cmd"] / med[base]
            if units[m] in lower_better: r = med[base] / med["cmd"]   # >1 means shardfs faster
            line += f"{r:>17.2f}"
        else:
            line += f"{'-':>17}"
    print(line)
print("(ratios: >1 means shardfs is faster, for times too)")
try:
    for l in open(sys.argv[2]):
        print("shardfs daemon peak RSS,", l.strip())
except FileNotFoundError:
    print("shardfs daemon peak RSS: not recorded")
try:
    for l in open(sys.argv[3]):
        print("daemon CPU,", l.strip())
except FileNotFoundError:
    print("daemon CPU per GiB: not recorded")
PY

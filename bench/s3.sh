#!/usr/bin/env bash
# S3 benchmark (issue 17, Speed): shardfs's S3 endpoint beside its own FUSE
# path on the same pool, and beside s3s-fs 0.14.1 (the s3s example server
# over one plain directory: S3 with no coding) on the same filesystem.
#
# Each round, for each system, on fresh directories under $SCRATCH:
#   shardfs   mkfs a 4+2 pool over 6 dirs, mount it with
#             --s3-listen 127.0.0.1:PORT --s3-keys (a 0600 file); the S3
#             suite, then the FUSE suite on the same mount
#   s3s-fs    s3s-fs --access-key --secret-key over one dir; the S3 suite
# A suite (bench/s3load.py, boto3 with a thread pool, one client a thread):
# 64 MiB PUT then GET (MiB/s) and 4 KiB PUT then GET (ops/s), with 1 and
# 16 clients; FUSE: write+fsync+close, then read. The daemon's peak RSS
# (VmHWM, reset before each case) and CPU time are taken per case. Prints
# medians of RUNS rounds (min-max) and the ratio shardfs/s3s-fs per row.
# Page caches stay warm (GET reads what PUT just wrote); a `sync` runs
# before every case and, timed apart, after every PUT.
#
#   bench/s3.sh                                  # RUNS=1
#   RUNS=3 bench/s3.sh
#   RUNS=1 LARGE_N=2 SMALL_N=50 bench/s3.sh       # a quick check
# Knobs: RUNS, LARGE_N (64 MiB objects a case, at least one per client; 8),
# SMALL_N (4 KiB objects a case; 2000), CASE_MAX_SECS (no new requests after
# this; 6), CLIENTS (1,16), SIZES (64MiB,4KiB), SYSTEMS ("shardfs s3s-fs"), SCRATCH, RES,
# S3S_FS (the s3s-fs binary; built into $TOOLS with cargo install if absent).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-1}
export LARGE_N=${LARGE_N:-8} SMALL_N=${SMALL_N:-2000} CASE_MAX_SECS=${CASE_MAX_SECS:-6}
CLIENTS=${CLIENTS:-1,16}
SIZES=${SIZES:-64MiB,4KiB}
unset RUST_LOG  # both daemons at their default log level (info / error)
SYSTEMS=${SYSTEMS:-"shardfs s3s-fs"}
SCRATCH=${SCRATCH:-/var/tmp/shardfs-s3bench}
RES=${RES:-/tmp/shardfs-s3bench-results}
TOOLS=${TOOLS:-$ROOT/../s3bench-tools}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/shardfs
LOAD=$ROOT/bench/s3load.py
AK=AKIABENCH
SK=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')

[ "$(id -u)" = 0 ] || { echo "needs root (FUSE mounts, /proc/PID/clear_refs)" >&2; exit 2; }
command -v fusermount3 >/dev/null || { echo "needs fusermount3 (fuse3)" >&2; exit 2; }
python3 -c 'import boto3' 2>/dev/null || { echo "needs boto3 (scripts/deps.sh)" >&2; exit 2; }

cargo build --release --quiet --bins
S3S_FS=${S3S_FS:-$(command -v s3s-fs || echo "$TOOLS/bin/s3s-fs")}
if [[ " $SYSTEMS " == *" s3s-fs "* ]] && [ ! -x "$S3S_FS" ]; then
  echo "building s3s-fs 0.14.1 into $TOOLS" >&2
  cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$TOOLS" --quiet \
    && S3S_FS=$TOOLS/bin/s3s-fs \
    || { echo "s3s-fs 0.14.1 did not build: benchmarking without it" >&2; SYSTEMS=${SYSTEMS//s3s-fs/}; }
fi

mkdir -p "$RES"
rm -f "$RES/results.tsv" "$RES/results.tsv.errors"
if awk -v s="$SCRATCH/" 'index($2 "/", s) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
  echo "something is mounted under $SCRATCH: unmount it first" >&2; exit 2
fi
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"

# Processes this script started, by PID, and the mount it made.
PIDS=()
MNT=
cleanup() {
  local rc=$?
  if [ -n "$MNT" ] && mountpoint -q "$MNT" 2>/dev/null; then
    fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
  fi
  for p in "${PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || continue
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ -n "$MNT" ] && mountpoint -q "$MNT" 2>/dev/null; then umount -l "$MNT" 2>/dev/null || true; fi
  rm -rf "$SCRATCH"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {  # PORT PID: until something listens on 127.0.0.1:PORT
  for _ in $(seq 300); do
    kill -0 "$2" 2>/dev/null || { echo "daemon $2 exited before listening" >&2; return 1; }
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}
# stop PID: SIGNAL, wait up to 30 s, then SIGKILL
stop() {
  kill -"$2" "$1" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$1" 2>/dev/null && { echo "pid $1 still running after SIG$2: killed" >&2; kill -KILL "$1" 2>/dev/null || true; }
  wait "$1" 2>/dev/null || true
  local keep=() q
  for q in "${PIDS[@]}"; do [ "$q" = "$1" ] || keep+=("$q"); done
  PIDS=("${keep[@]}")
}

run_shardfs() {  # ROUND
  local d=$SCRATCH/shardfs port pid
  mkdir -p "$d/mnt"
  "$BIN" mkfs "$d"/d{0..5} > "$d/mkfs.log"
  printf '# bench/s3.sh\n%s %s\n' "$AK" "$SK" > "$d/s3.keys"
  chmod 600 "$d/s3.keys"
  port=$(free_port)
  MNT=$d/mnt
  "$BIN" mount --socket "$d/ctl.sock" --s3-listen "127.0.0.1:$port" --s3-keys "$d/s3.keys" \
    "$d"/d{0..5} "$d/mnt" > "$RES/shardfs-daemon-r$1.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do mountpoint -q "$d/mnt" && break; sleep 0.1; done
  mountpoint -q "$d/mnt" || { echo "shardfs did not mount" >&2; cat "$RES/shardfs-daemon-r$1.log" >&2; return 1; }
  wait_port "$port" "$pid"
  echo "shardfs round $1: pid $pid, S3 at 127.0.0.1:$port, VmRSS at start $(grep VmRSS /proc/$pid/status | awk '{print $2}') kB"
  python3 "$LOAD" suite --target s3 --endpoint "http://127.0.0.1:$port" --access "$AK" --secret "$SK" \
    --system shardfs --round "$1" --pid "$pid" --clients "$CLIENTS" --sizes "$SIZES" --out "$RES/results.tsv"
  python3 "$LOAD" suite --target fs --dir "$d/mnt/fusebench" \
    --system shardfs --round "$1" --pid "$pid" --clients "$CLIENTS" --sizes "$SIZES" --out "$RES/results.tsv"
  stop "$pid" TERM   # unmounts: the S3 endpoint stops, then the final sync
  mountpoint -q "$d/mnt" && { fusermount3 -u "$d/mnt" || umount -l "$d/mnt"; }
  MNT=
  rm -rf "$d"
}

run_s3sfs() {  # ROUND
  local d=$SCRATCH/s3s-fs port pid
  mkdir -p "$d/data"
  port=$(free_port)
  "$S3S_FS" --host 127.0.0.1 --port "$port" --access-key "$AK" --secret-key "$SK" "$d/data" \
    > "$RES/s3s-fs-r$1.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_port "$port" "$pid"
  echo "s3s-fs round $1: pid $pid, S3 at 127.0.0.1:$port, VmRSS at start $(grep VmRSS /proc/$pid/status | awk '{print $2}') kB"
  python3 "$LOAD" suite --target s3 --endpoint "http://127.0.0.1:$port" --access "$AK" --secret "$SK" \
    --system s3s-fs --round "$1" --pid "$pid" --clients "$CLIENTS" --sizes "$SIZES" --out "$RES/results.tsv"
  stop "$pid" INT    # s3s-fs stops on ctrl-c
  rm -rf "$d"
}

{
  echo "bench/s3.sh $(date -u +%FT%TZ), shardfs $(git rev-parse --short HEAD 2>/dev/null), $(nproc) cores, $(uname -r)"
  echo "scratch $SCRATCH on $(df --output=source,fstype "$SCRATCH" | tail -1 | tr -s ' ')"
  echo "RUNS=$RUNS LARGE_N=$LARGE_N SMALL_N=$SMALL_N CASE_MAX_SECS=$CASE_MAX_SECS CLIENTS=$CLIENTS SIZES=$SIZES SYSTEMS=$SYSTEMS"
  echo "s3s-fs: ${S3S_FS} ($("$S3S_FS" --version 2>/dev/null || echo none))"
} | tee "$RES/header.txt"
t0=$(date +%s)
for r in $(seq "$RUNS"); do
  order=$SYSTEMS
  # alternate which system goes first, so that drift spreads over both
  [ $((r % 2)) = 0 ] && order=$(echo $SYSTEMS | tr ' ' '\n' | tac | tr '\n' ' ')
  for s in $order; do
    case $s in
      shardfs) run_shardfs "$r" ;;
      s3s-fs) run_s3sfs "$r" ;;
    esac
  done
done
echo "load took $(( $(date +%s) - t0 )) s"
echo
python3 "$LOAD" table "$RES/results.tsv" | tee "$RES/table.txt"
echo
echo "raw rows: $RES/results.tsv; daemon logs: $RES/"

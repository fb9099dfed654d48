#!/usr/bin/env bash
# A/B of two shardfs binaries on the sequential write, alternating: each
# round makes a fresh 4+2 pool over six directories, writes SIZE with fio
# (1 MiB, buffered, end_fsync), reads it back once through a fresh open,
# and prints MiB/s of both and the daemon's CPU seconds per GiB written.
#
#   bench/ab-seqwrite.sh OLD_BIN NEW_BIN            # ROUNDS=3 SIZE=2G
#   ROUNDS=5 SIZE=1G MOUNT_ARGS="--direct-writes on" bench/ab-seqwrite.sh A B
set -euo pipefail
A=$1 B=$2
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-2G}
S=${SCRATCH:-/tmp/shardfs-ab}
command -v fio >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio fuse3 >/dev/null; }
gib=$(python3 -c "import re; s='$SIZE'; n=float(re.sub('[^0-9.]','',s)); u=s[-1].upper(); print(n/1024 if u=='M' else n*1024 if u=='T' else n)")
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
one() {
  local bin=$1 label=$2
  rm -rf "$S"; mkdir -p "$S"/d{1..6} "$S/mnt"
  "$bin" mkfs "$S"/d{1..6} >/dev/null
  # shellcheck disable=SC2086
  "$bin" mount --socket "$S/sock" ${MOUNT_ARGS:-} "$S"/d{1..6} "$S/mnt" > "$S/log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do mountpoint -q "$S/mnt" && break; sleep 0.1; done
  mkdir "$S/mnt/bkt"
  local c0 c1 w r
  c0=$(cpu_s $pid)
  w=$(fio --ioengine=psync --direct=0 --fallocate=none --name=w --filename="$S/mnt/bkt/seq" \
        --rw=write --bs=1M --size="$SIZE" --end_fsync=1 --output-format=json |
      python3 -c "import json,sys; print(round(json.load(sys.stdin)['jobs'][0]['write']['bw_bytes']/2**20))")
  c1=$(cpu_s $pid)
  r=$(fio --ioengine=psync --direct=0 --name=r --filename="$S/mnt/bkt/seq" \
        --rw=read --bs=1M --size="$SIZE" --output-format=json |
      python3 -c "import json,sys; print(round(json.load(sys.stdin)['jobs'][0]['read']['bw_bytes']/2**20))")
  printf '%s\twrite %s MiB/s\tread %s MiB/s\tCPU %s s/GiB\tload1 %s\n' "$label" "$w" "$r" \
    "$(awk -v a="$c0" -v b="$c1" -v g="$gib" 'BEGIN {printf "%.2f", (b - a) / g}')" \
    "$(cut -d' ' -f1 /proc/loadavg)"
  fusermount3 -u "$S/mnt"; wait $pid || true
}
for i in $(seq "$ROUNDS"); do
  one "$A" "A $(basename "$(dirname "$(dirname "$A")")")"
  one "$B" "B $(basename "$(dirname "$(dirname "$B")")")"
done
rm -rf "$S"

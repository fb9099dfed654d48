#!/usr/bin/env bash
# Disk bytes behind 4 KiB random reads: a fresh 4+2 pool over six
# directories, a SIZE fio write, drop_caches, SECS of fio 4 KiB QD1 random
# reads (the peer baseline's line); prints IOPS, the bytes the daemon read
# from the disk (/proc/PID/io read_bytes), and the read-path metrics.
#
#   bench/randread-io.sh            # SIZE=2G SECS=20
set -euo pipefail
cd "$(dirname "$0")/.."
command -v fio >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null; }
cargo build --release --bins -q
B=$PWD/target/release/shardfs
W=$(mktemp -d /tmp/shardfs-rrio.XXXXXX)
M=$W/mnt
mkdir -p "$M" "$W"/d{0..5}
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
FIO=(fio --ioengine=psync --direct=0 --fallocate=none --numjobs=1 --output-format=json --filename="$M/bkt/f" --size="${SIZE:-2G}")
"${FIO[@]}" --name=w --rw=write --bs=1M --end_fsync=1 > /dev/null
sync; echo 3 > /proc/sys/vm/drop_caches
r0=$(awk '/^read_bytes/{print $2}' /proc/$pid/io)
"${FIO[@]}" --name=rr --rw=randread --bs=4k --time_based --runtime="${SECS:-20}" --randrepeat=1 \
  | python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]['read']; print('randread: %.0f IOPS, mean latency %.0f us, %.0f MiB asked' % (j['iops'], j['clat_ns']['mean']/1000, j['io_bytes']/2**20))"
r1=$(awk '/^read_bytes/{print $2}' /proc/$pid/io)
echo "daemon read from the disk: $(( (r1 - r0) / 1048576 )) MiB"
"$PWD/target/release/shardctl" --socket "$W/sock" metrics \
  | grep -E '^shardfs_pool_(shard_reads|cached_shard_reads|polled_shard_reads|parity_reads_by_choice)_total|^shardfs_fuse_(requests|bytes)_total\{op="read"\}'

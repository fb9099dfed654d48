#!/usr/bin/env bash
# Passthrough benchmark (issue 6), one run, all peers over the same six
# directories on the same disk:
#
#   raw               the replica files read directly (the backing disk)
#   shardfs-pt        shardfs, hot files with replicas, FUSE passthrough on
#   shardfs-ec        the same pool and files mounted with --passthrough off
#                     (hot tier on the erasure code, read through the daemon)
#   mergerfs-off      mergerfs over the six directories, cache.files=off
#   mergerfs-partial  mergerfs, cache.files=partial (page cache on)
#
# Workloads: LARGE_FILES files of LARGE_MIB MiB read sequentially with a
# cold page cache (drop_caches before) and again warm; SMALL_FILES files of
# SMALL_KIB KiB read with a cold cache. Prints MB/s and files/s per peer
# and the ratios to raw.
#
#   bench/passthrough.sh
#   LARGE_FILES=16 LARGE_MIB=64 SMALL_FILES=4000 bench/passthrough.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LARGE_FILES=${LARGE_FILES:-8}
LARGE_MIB=${LARGE_MIB:-64}
SMALL_FILES=${SMALL_FILES:-2000}
SMALL_KIB=${SMALL_KIB:-256}  # above the 64 KiB inline limit: inline files live in the metadata
[ "$(id -u)" = 0 ] || { echo "needs root (mounts, drop_caches)" >&2; exit 2; }
command -v mergerfs >/dev/null && command -v fusermount3 >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mergerfs fuse3 >/dev/null; }
cargo build --release --quiet --bins
BIN=$ROOT/target/release
dir=$(mktemp -d /var/tmp/shardfs-ptbench.XXXXXX)
mnt=$dir/mnt
sock=$dir/ctl.sock
pid=
cleanup() {
  mountpoint -q "$mnt" && { fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; }
  [ -n "$pid" ] && wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$mnt" "$dir/src"
disks=()
for i in 0 1 2 3 4 5; do disks+=("$dir/d$i"); done

now() { date +%s.%N; }
calc() { awk "BEGIN { print ($*) }"; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# read every file under $1 (list in $2) once, in one process, 1 MiB at a
# time; prints seconds
read_all() {
  python3 - "$1" "$2" <<'PY'
import os, sys, time
base, lst = sys.argv[1], sys.argv[2]
files = open(lst).read().split()
buf = bytearray(1 << 20)
t0 = time.monotonic()
for f in files:
    fd = os.open(os.path.join(base, f), os.O_RDONLY)
    while os.readv(fd, [buf]) > 0:
        pass
    os.close(fd)
print(time.monotonic() - t0)
PY
}

echo "== data: $LARGE_FILES x $LARGE_MIB MiB, $SMALL_FILES x $SMALL_KIB KiB"
: > "$dir/large.list"
: > "$dir/small.list"
for i in $(seq 1 "$LARGE_FILES"); do
  head -c "$((LARGE_MIB << 20))" /dev/urandom > "$dir/src/L$i"
  echo "bkt/L$i" >> "$dir/large.list"
done
mkdir -p "$dir/src/s"
python3 - "$dir/src/s" "$SMALL_FILES" "$SMALL_KIB" <<'EOF'
import os, sys
d, n, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    with open(os.path.join(d, f"s{i}"), "wb") as f:
        f.write(os.urandom(kib * 1024))
EOF
for i in $(seq 0 $((SMALL_FILES - 1))); do echo "bkt/s/s$i" >> "$dir/small.list"; done

mount_shardfs() { # $1: on|off
  "$BIN/shardfs" mount --socket "$sock" --passthrough "$1" "${disks[@]}" "$mnt" > "$dir/daemon-$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do mountpoint -q "$mnt" && return 0; sleep 0.1; done
  echo "mount failed:"; cat "$dir/daemon-$1.log"; exit 1
}
unmount() {
  fusermount3 -u "$mnt"
  [ -n "$pid" ] && wait "$pid" 2>/dev/null
  pid=
}

"$BIN/shardfs" mkfs "${disks[@]}" > /dev/null
mount_shardfs on
grep -q "passthrough on" "$dir/daemon-on.log" || { echo "the kernel refused FUSE passthrough:"; cat "$dir/daemon-on.log"; exit 1; }
"$BIN/shardctl" --socket "$sock" tier policy --hot-replica > /dev/null
mkdir "$mnt/bkt"
cp "$dir"/src/L* "$mnt/bkt/"
cp -r "$dir/src/s" "$mnt/bkt/s"
sync
want=$((LARGE_FILES + SMALL_FILES))
t0=$(now)
"$BIN/shardctl" --socket "$sock" tier start --all-hot > /dev/null
while :; do
  have=$("$BIN/shardctl" --socket "$sock" tier status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["replicas"]["replicas"])')
  [ "$have" -ge "$want" ] && break
  [ "$(calc "$(now) - $t0 > 900")" = 1 ] && { echo "only $have of $want replicas after 900 s"; exit 1; }
  sleep 1
done
echo "replicas built: $have in $(calc "$(now) - $t0") s"
# every byte through the mount equals the source
for f in $(head -3 "$dir/large.list") $(head -50 "$dir/small.list"); do
  cmp -s "$mnt/$f" "$dir/src/${f#bkt/}" || { echo "MISMATCH $f"; exit 1; }
done

declare -A R
measure() { # peer base
  local peer=$1 base=$2
  cold; R[$peer,large_cold]=$(read_all "$base" "$dir/large.list")
  R[$peer,large_warm]=$(read_all "$base" "$dir/large.list")
  cold; R[$peer,small_cold]=$(read_all "$base" "$dir/small.list")
}

# raw: the replica files themselves, under the same names (hard links)
mkdir -p "$dir/raw/bkt/s"
python3 - "$sock" "$BIN/shardctl" "$dir" "$mnt" <<'EOF'
import json, os, subprocess, sys
sock, ctl, d, mnt = sys.argv[1:]
# map each file to its replica through the inode number and the R naming
for rel in open(f"{d}/large.list").read().split() + open(f"{d}/small.list").read().split():
    ino = os.stat(f"{mnt}/{rel}").st_ino
    found = None
    for i in range(6):
        rd = f"{d}/d{i}/replicas"
        for n in os.listdir(rd) if os.path.isdir(rd) else []:
            if n.startswith(f"{ino:x}-"):
                found = f"{rd}/{n}"
    assert found, rel
    os.link(found, f"{d}/raw/{rel}")
EOF
before=$("$BIN/shardctl" --socket "$sock" metrics | awk '/^shardfs_fuse_requests_total\{op="read"\}/ {print $2}')
measure shardfs-pt "$mnt"
after=$("$BIN/shardctl" --socket "$sock" metrics | awk '/^shardfs_fuse_requests_total\{op="read"\}/ {print $2}')
pt_opens=$("$BIN/shardctl" --socket "$sock" tier status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["replicas"]["passthrough_opens"])')
echo "shardfs-pt: $pt_opens opens served by passthrough; FUSE read requests during the reads: $(calc "$after - $before")"
measure raw "$dir/raw"
unmount
mount_shardfs off
measure shardfs-ec "$mnt"
unmount
rm -rf "$dir/raw"
# mergerfs over the same six directories, holding a plain copy of the files
for i in 0 1 2 3 4 5; do mkdir -p "$dir/d$i/mfs"; done
branches=$(printf '%s:' "${disks[@]/%//mfs}"); branches=${branches%:}
mergerfs -o cache.files=off,category.create=rand "$branches" "$mnt"
mkdir -p "$mnt/bkt"; cp "$dir"/src/L* "$mnt/bkt/"; cp -r "$dir/src/s" "$mnt/bkt/s"; sync
measure mergerfs-off "$mnt"
fusermount3 -u "$mnt"
mergerfs -o cache.files=partial,category.create=rand "$branches" "$mnt"
measure mergerfs-partial "$mnt"
fusermount3 -u "$mnt"

mb=$((LARGE_FILES * LARGE_MIB))
printf '\n%-17s %14s %14s %14s\n' peer "large cold MB/s" "large warm MB/s" "small cold files/s"
for p in raw shardfs-pt shardfs-ec mergerfs-off mergerfs-partial; do
  printf '%-17s %14.0f %14.0f %14.0f\n' "$p" \
    "$(calc "$mb * 1.048576 / ${R[$p,large_cold]}")" \
    "$(calc "$mb * 1.048576 / ${R[$p,large_warm]}")" \
    "$(calc "$SMALL_FILES / ${R[$p,small_cold]}")"
done
echo
for p in shardfs-pt shardfs-ec mergerfs-off mergerfs-partial; do
  printf '%-17s large cold %.2fx raw, large warm %.2fx raw, small cold %.2fx raw\n' "$p" \
    "$(calc "${R[raw,large_cold]} / ${R[$p,large_cold]}")" \
    "$(calc "${R[raw,large_warm]} / ${R[$p,large_warm]}")" \
    "$(calc "${R[raw,small_cold]} / ${R[$p,small_cold]}")"
done
printf 'passthrough over the daemon (shardfs-pt / shardfs-ec): large cold %.2fx, large warm %.2fx, small cold %.2fx\n' \
  "$(calc "${R[shardfs-ec,large_cold]} / ${R[shardfs-pt,large_cold]}")" \
  "$(calc "${R[shardfs-ec,large_warm]} / ${R[shardfs-pt,large_warm]}")" \
  "$(calc "${R[shardfs-ec,small_cold]} / ${R[shardfs-pt,small_cold]}")"

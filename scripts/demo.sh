#!/usr/bin/env bash
# Build shardfs, create a demo pool of 6 member directories under ./demo,
# mount it at ./demo/mnt in the background, and say where.
#   ./scripts/demo.sh          set up and mount
#   ./scripts/demo.sh stop     unmount
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${DEMO:-$PWD/demo}
MNT=$DEMO/mnt
SOCK=$DEMO/ctl.sock
if [ "${1:-}" = stop ]; then
  if mountpoint -q "$MNT"; then
    fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT"
  fi
  echo "unmounted $MNT"
  exit 0
fi
./scripts/deps.sh
cargo build --release --bins
BIN=$PWD/target/release
mkdir -p "$DEMO" "$MNT"
if mountpoint -q "$MNT"; then
  echo "already mounted at $MNT"
else
  if [ ! -f "$DEMO/disks/disk0/shardfs.superblock" ]; then
    "$BIN/shardfs" mkfs --data 4 --parity 2 "$DEMO"/disks/disk{0..5}
  fi
  members=()
  for d in "$DEMO"/disks/disk{0..5}; do [ -d "$d" ] && members+=("$d"); done
  nohup "$BIN/shardfs" mount --socket "$SOCK" "${members[@]}" "$MNT" >"$DEMO/shardfs.log" 2>&1 &
  for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
  mountpoint -q "$MNT" || { cat "$DEMO/shardfs.log"; exit 1; }
fi
cat <<MSG

shardfs demo pool (4 data + 2 parity over 6 member directories) is mounted:
  mount point   $MNT
  members       $DEMO/disks/disk0 .. disk5
  log           $DEMO/shardfs.log
  admin         $BIN/shardctl --socket $SOCK status
Try:  mkdir $MNT/photos && cp -r /usr/share/common-licenses $MNT/photos/ && $BIN/shardctl --socket $SOCK locate photos/common-licenses/GPL-3
Stop: ./scripts/demo.sh stop
MSG

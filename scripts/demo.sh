#!/usr/bin/env bash
# Build shardfs, create a demo pool of 6 member directories under ./demo,
# mount it at ./demo/mnt in the background, and say where.
#   ./scripts/demo.sh          set up and mount
#   ./scripts/demo.sh stop     unmount, and return once the daemon has exited
#                              (its last sync and catalog write are done, so
#                              `rm -rf demo` right after works)
# SHARDFS_BIN_DIR=DIR uses the shardfs binaries in DIR (no deps, no build).
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${DEMO:-$PWD/demo}
MNT=$DEMO/mnt
SOCK=$DEMO/ctl.sock
PIDFILE=$DEMO/shardfs.pid

# The pid in $PIDFILE if it is still our daemon: a shardfs process whose
# command line names this mount point (a recycled pid is left alone).
daemon_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  local cmd
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  case $cmd in
  *shardfs*" mount "*"$MNT"*) echo "$pid" ;;
  *) return 1 ;;
  esac
}

# True while process $1 runs. A zombie whose reaper has not come yet has
# exited, but only once its other threads are gone: while the daemon exits
# its main thread shows as a zombie before the rest have finished.
running() {
  local stat tasks
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ] && return 0
  tasks=$(ls "/proc/$1/task" 2>/dev/null | wc -l)
  [ "$tasks" -gt 1 ]
}

if [ "${1:-}" = stop ]; then
  if pid=$(daemon_pid); then
    # SIGTERM: the daemon unmounts (retrying while the mount is busy),
    # makes everything durable, writes the catalog and exits
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 600); do
      running "$pid" || break
      sleep 0.1
    done
    if running "$pid"; then
      echo "shardfs (pid $pid) has not exited after 60 s; see $DEMO/shardfs.log" >&2
      exit 1
    fi
    rm -f "$PIDFILE"
  elif mountpoint -q "$MNT"; then
    # a mount without a pid file (started otherwise): unmount only
    echo "no daemon pid in $PIDFILE: unmounting without waiting for the daemon" >&2
    fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT"
  fi
  if mountpoint -q "$MNT"; then
    echo "$MNT is still mounted" >&2
    exit 1
  fi
  echo "unmounted $MNT"
  exit 0
fi
if [ -n "${SHARDFS_BIN_DIR:-}" ]; then
  BIN=$SHARDFS_BIN_DIR
else
  ./scripts/deps.sh
  cargo build --release --bins
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
fi
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
  echo $! >"$PIDFILE"
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

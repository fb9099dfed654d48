#!/usr/bin/env bash
# The whole test suite: unit tests, and filesystem tests through real FUSE
# mounts (needs root or a user allowed to mount FUSE, and /dev/fuse).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --no-fail-fast "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# one closing line over every test binary
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"

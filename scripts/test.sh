#!/usr/bin/env bash
# The whole test suite: unit tests, and filesystem tests through real FUSE
# mounts (needs root or a user allowed to mount FUSE, and /dev/fuse).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo test --release "$@"

#!/usr/bin/env bash
# Heat benchmark (issue 5), one run: 12 members emulating 120-IOPS / 200 MB/s
# disks, 4 tenants' files, a Zipf-skewed random-read load from 16 threads,
# once with the naive read policy (the baseline, same run, same
# directories) and once heat-aware; then the same with one member 10x
# slower. Prints utilisation and operation spread (max/mean), p50/p99/p99.9
# latency and throughput, and whether the issue's targets are met.
#
#   bench/heat.sh                 # defaults (about 3 minutes)
#   bench/heat.sh --secs 40       # longer runs; see --help for every knob
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin shardfs-heatbench
dir=$(mktemp -d /var/tmp/shardfs-heatbench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
./target/release/shardfs-heatbench --dir "$dir/pool" "$@"

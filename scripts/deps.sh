#!/usr/bin/env bash
# Install what shardfs needs to build, mount and test on Debian (idempotent).
# Runs apt-get only for packages that are missing; uses sudo when not root.
set -euo pipefail
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v rsync >/dev/null || need+=(rsync)
command -v git >/dev/null || need+=(git)
command -v python3 >/dev/null || need+=(python3)
command -v cc >/dev/null || need+=(build-essential)
# systemd-analyze: tests/mount_helper.rs verifies the unit files
command -v systemd-analyze >/dev/null || need+=(systemd)
# prometheus_client: tests/metrics.rs parses the metrics with its text parser
# (Debian's package is for /usr/bin/python3, which the test also tries)
python3 -c 'import prometheus_client' 2>/dev/null \
  || /usr/bin/python3 -c 'import prometheus_client' 2>/dev/null \
  || need+=(python3-prometheus-client)
# boto3 and aws-cli: tests/s3.rs drives the S3 endpoint with them (from
# PyPI, pinned; pip needs Debian's python3-pip where python3 has none)
s3_clients_ok() {
  python3 -c 'import boto3, sys; sys.exit(boto3.__version__ != "1.43.11")' 2>/dev/null \
    && aws --version 2>&1 | grep -q '^aws-cli/1\.45\.11 '
}
s3_clients_ok || python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! s3_clients_ok; then
  echo "installing: boto3==1.43.11 awscli==1.45.11 (pip)" >&2
  pkgs=(boto3==1.43.11 awscli==1.45.11)
  # a Debian python3 refuses pip installs outside a venv unless told
  python3 -m pip install --quiet "${pkgs[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "${pkgs[@]}"
  hash -r
  s3_clients_ok || { echo "boto3/aws-cli not usable after pip install" >&2; exit 1; }
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi

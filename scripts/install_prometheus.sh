#!/usr/bin/env bash
# Debian's prometheus (2.42 on bookworm) for `make test-cluster`'s autoscaling test; a no-op once installed.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
fi
echo "==> installing Debian's prometheus (apt)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
prometheus --version | head -1

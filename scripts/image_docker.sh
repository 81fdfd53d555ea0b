#!/usr/bin/env bash
# A Docker engine for `make image` / `make test-image`: prints the DOCKER_HOST to use.
# `up`: use $DOCKER_HOST (or the default socket) if a daemon answers there; else start our own dockerd on
# unix:///run/tvo-docker.sock (no iptables, no bridge: this box has no network namespaces to spare; builds and
# containers use the host network). `down`: stop the dockerd this script started (if any).
set -euo pipefail
SOCK=${TVO_DOCKER_SOCK:-/run/tvo-docker.sock}
ROOT=${TVO_DOCKER_ROOT:-/var/lib/tvo-docker}
PIDFILE=/run/tvo-docker.pid
EXEC=/run/tvo-docker-exec
case "${1:-up}" in
  up)
    if docker info >/dev/null 2>&1; then echo "${DOCKER_HOST:-unix:///var/run/docker.sock}"; exit 0; fi
    if DOCKER_HOST="unix://$SOCK" docker info >/dev/null 2>&1; then echo "unix://$SOCK"; exit 0; fi
    command -v dockerd >/dev/null || { echo "no dockerd: run scripts/setup_image_tools.sh" >&2; exit 1; }
    mkdir -p "$ROOT"
    dockerd --iptables=false --bridge=none -H "unix://$SOCK" --data-root "$ROOT" --exec-root "$EXEC" \
      --pidfile "$PIDFILE" >/var/log/tvo-dockerd.log 2>&1 &
    for _ in $(seq 60); do
      DOCKER_HOST="unix://$SOCK" docker info >/dev/null 2>&1 && { echo "unix://$SOCK"; exit 0; }
      sleep 0.5
    done
    echo "dockerd did not start; see /var/log/tvo-dockerd.log" >&2; exit 1 ;;
  down)
    if [[ -f "$PIDFILE" ]]; then
      pid=$(cat "$PIDFILE"); kill "$pid" 2>/dev/null || true
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      umount "$EXEC/netns/default" 2>/dev/null || true  # dockerd leaves its network namespace mounted
    fi ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Start a private Docker daemon (no bridge, no iptables, no IP forwarding: it cannot touch the
# host network) and build the sandbox images (debootstrap + docker import, no registry).
# Installs nothing. Exits non-zero when it cannot; CI then skips the docker tests.
# The daemon's PID goes to $STATE/dockerd.pid; .ci/docker_down.sh stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${JAXREPAIR_DOCKER_STATE:-${JAXREPAIR_CACHE:-$HOME/.cache/jaxrepair}/dockerd}"
mkdir -p "$STATE"
PIDFILE="$STATE/dockerd.pid"

for tool in dockerd docker debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || { echo "docker_up: $tool not found" >&2; exit 1; }
done

wait_ready() {
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then return 1; fi
    sleep 1
  done
  return 1
}

if docker info >/dev/null 2>&1; then
  echo "docker_up: a daemon is already answering; using it"
else
  started=0
  for driver in overlay2 vfs; do
    dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
      --storage-driver="$driver" --data-root="${JAXREPAIR_DOCKER_ROOT:-/var/lib/docker}" \
      >"$STATE/dockerd.log" 2>&1 &
    echo $! >"$PIDFILE"
    if wait_ready; then started=1; echo "docker_up: dockerd (pid $(cat "$PIDFILE"), $driver) is up"; break; fi
    echo "docker_up: dockerd with storage driver $driver did not come up:" >&2
    tail -5 "$STATE/dockerd.log" >&2 || true
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    sleep 1
  done
  [ "$started" = 1 ] || { rm -f "$PIDFILE"; exit 1; }
fi

# Images per build system, built in parallel (debootstrap is network- and dpkg-bound).
pids=()
for bs in python make cmake npm; do
  python3 jaxrepair/envs/sandbox/images.py "$bs" >"$STATE/image-$bs.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
cat "$STATE"/image-*.log
if [ "$rc" != 0 ]; then echo "docker_up: building the sandbox images failed" >&2; exit 1; fi
echo "docker_up: ready"

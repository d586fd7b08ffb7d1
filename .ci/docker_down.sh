#!/usr/bin/env bash
# Stop the Docker daemon that .ci/docker_up.sh started (by its recorded PID only).
set -uo pipefail
STATE="${JAXREPAIR_DOCKER_STATE:-${JAXREPAIR_CACHE:-$HOME/.cache/jaxrepair}/dockerd}"
PIDFILE="$STATE/dockerd.pid"
[ -f "$PIDFILE" ] || { echo "docker_down: no pid file; nothing to stop"; exit 0; }
pid="$(cat "$PIDFILE")"
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  echo "docker_down: stopped dockerd (pid $pid)"
fi
rm -f "$PIDFILE"

#!/usr/bin/env bash
# SFT / GRPO / eval on a Cloud TPU VM slice: one JAX process per host, all joined into one
# runtime (JAX detects the pod from the TPU metadata server; see jaxrepair/distributed.py).
#
#   launch/tpu_pod.sh TPU ZONE setup                          ship code, install .[tpu] per host
#   launch/tpu_pod.sh TPU ZONE sft|grpo|eval CONFIG [ARGS...]  ship code + config, start detached
#   launch/tpu_pod.sh TPU ZONE status                         is the run alive on each host
#   launch/tpu_pod.sh TPU ZONE logs [LINES]                   last lines of each host's log
#   launch/tpu_pod.sh TPU ZONE stop                           SIGTERM: checkpoint, then exit
#
# Every run first copies the working tree (git-tracked and untracked, non-ignored files) and
# the config to ~/$JAXREPAIR_REMOTE_DIR (default ~/jaxrepair) on every host; the config lands
# at .launch/<its file name>. ARGS after CONFIG (e.g. --set k=v, repeatable) reach the
# `jaxrepair` command on each host exactly as given. The run is started with nohup + setsid,
# so it survives the ssh session; each host logs to runs/launch/<hostname>.log there.
# The project comes from gcloud's configuration (or CLOUDSDK_CORE_PROJECT).
set -euo pipefail

PROG=launch/tpu_pod.sh
REMOTE_DIR=${JAXREPAIR_REMOTE_DIR:-jaxrepair}
SHIP=jaxrepair-ship.tar.gz
PY=${JAXREPAIR_REMOTE_PYTHON:-python3}

usage() {
  echo "usage: $PROG TPU ZONE COMMAND [ARGS...]" >&2
  sed -n '5,9s/^#   /  /p' "${BASH_SOURCE[0]}" >&2
  exit 2
}
die() {
  echo "$PROG: $*" >&2
  exit 2
}
# Quote one argument for the remote POSIX shell: every byte survives, spaces and quotes too.
q() {
  local s
  s=$(printf '%sx' "$1" | sed "s/'/'\\\\''/g")
  printf "'%s'" "${s%x}"
}

[ $# -ge 3 ] || usage
TPU=$1 ZONE=$2 COMMAND=$3
shift 3
[[ $TPU =~ ^[A-Za-z0-9_./-]+$ ]] || die "bad TPU name '$TPU'"
[[ $ZONE =~ ^[a-z0-9-]+$ ]] || die "bad zone '$ZONE'"
[[ $REMOTE_DIR =~ ^[A-Za-z0-9._][A-Za-z0-9._/-]*$ && $REMOTE_DIR != *..* ]] ||
  die "JAXREPAIR_REMOTE_DIR must be a plain path under the home directory, got '$REMOTE_DIR'"
command -v gcloud >/dev/null || die "gcloud not found on PATH (install the Google Cloud CLI)"

RD=$(q "$REMOTE_DIR")
PYQ=$(q "$PY")
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

export COPYFILE_DISABLE=1 # macOS tar: no AppleDouble files in the archive
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="$1"
}

# Tar the working tree (plus, optionally, the config at .launch/NAME) and copy it to every host.
ship() {
  local config=${1:-} stage=$STAGE list=$STAGE/files
  if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    : >"$list"
    while IFS= read -r -d '' f; do
      if [ -f "$REPO/$f" ]; then printf '%s\0' "$f" >>"$list"; fi
    done < <(git -C "$REPO" ls-files -z --cached --others --exclude-standard)
    # GNU tar: a file deleted while we pack (an editor's temporary file) is a warning only.
    local tolerant=""
    if tar --version 2>/dev/null | grep -q GNU; then tolerant=--ignore-failed-read; fi
    tar -cf "$stage/ship.tar" $tolerant -C "$REPO" --null -T "$list"
  else
    tar -cf "$stage/ship.tar" -C "$REPO" --exclude=./.venv --exclude=./runs --exclude=./.git .
  fi
  if [ -n "$config" ]; then
    mkdir -p "$stage/.launch"
    cp "$config" "$stage/.launch/"
    tar -rf "$stage/ship.tar" -C "$stage" ".launch/$(basename "$config")"
  fi
  gzip -c "$stage/ship.tar" >"$stage/$SHIP"
  echo "$PROG: copying $(du -h "$stage/$SHIP" | cut -f1) of code to every host of $TPU" >&2
  gcloud compute tpus tpu-vm scp "$stage/$SHIP" "$TPU:" --zone="$ZONE" --worker=all
}

# Remote shell snippets (POSIX sh; run in the remote home directory).
UNPACK="mkdir -p $RD && tar -xzf $SHIP -C $RD && rm -f $SHIP"
ALIVE="[ -f runs/launch/pid ] && kill -0 \"\$(cat runs/launch/pid)\" 2>/dev/null"
HOST='$(hostname)'
# Refuse to replace the code under a run that is still going.
NOT_RUNNING="cd; if [ -d $RD ] && (cd $RD && $ALIVE); then
        echo \"$HOST: a run is still going (pid \$(cat $RD/runs/launch/pid)); stop it first: $PROG $TPU $ZONE stop\" >&2
        rm -f $SHIP; exit 3
      fi"

case $COMMAND in
  setup)
    [ $# -eq 0 ] || die "setup takes no arguments, got: $*"
    ship
    ssh_all "set -e; $NOT_RUNNING
      $UNPACK; cd $RD
      $PYQ -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        { echo \"$HOST: $PY is older than Python 3.11; install one and set JAXREPAIR_REMOTE_PYTHON\" >&2; exit 3; }
      $PYQ -m venv .venv; . .venv/bin/activate
      python -m pip install -q -U pip; python -m pip install -q -e '.[tpu]'
      echo \"$HOST: installed \$(python -c 'import jax; print(\"jax\", jax.__version__)')\""
    ;;
  sft | grpo | eval)
    [ $# -ge 1 ] || die "$COMMAND needs a config TOML: $PROG TPU ZONE $COMMAND CONFIG [--set k=v ...]"
    CONFIG=$1
    shift
    [ -f "$CONFIG" ] || die "config not found: $CONFIG"
    ARGS=""
    for a in "$@"; do ARGS+=" $(q "$a")"; done
    RUN="python -m jaxrepair.cli $(q "$COMMAND") $(q ".launch/$(basename "$CONFIG")")$ARGS"
    ship "$CONFIG"
    ssh_all "set -e; $NOT_RUNNING
      $UNPACK; cd $RD
      [ -f .venv/bin/activate ] || { echo \"$HOST: no ~/$REMOTE_DIR/.venv; run first: $PROG $TPU $ZONE setup\" >&2; exit 3; }
      . .venv/bin/activate; mkdir -p runs/launch; log=runs/launch/$HOST.log
      echo \"== \$(date -u +%FT%TZ) $COMMAND\" >>\"\$log\"
      nohup setsid $RUN >>\"\$log\" 2>&1 </dev/null &
      echo \$! >runs/launch/pid
      echo \"$HOST: started pid \$!, log ~/$REMOTE_DIR/\$log\""
    echo "$PROG: started on every host of $TPU; follow with: $PROG $TPU $ZONE logs" >&2
    ;;
  status)
    [ $# -eq 0 ] || die "status takes no arguments, got: $*"
    ssh_all "cd $RD 2>/dev/null || { echo \"$HOST: no ~/$REMOTE_DIR\"; exit 0; }
      if $ALIVE; then echo \"$HOST: running (pid \$(cat runs/launch/pid))\"; else echo \"$HOST: not running\"; fi"
    ;;
  logs)
    N=${1:-50}
    [[ $N =~ ^[0-9]+$ && $# -le 1 ]] || die "logs takes one optional line count, got: $*"
    ssh_all "cd $RD 2>/dev/null && tail -n $N runs/launch/$HOST.log 2>/dev/null | sed \"s/^/[$HOST] /\""
    ;;
  stop)
    [ $# -eq 0 ] || die "stop takes no arguments, got: $*"
    ssh_all "cd $RD 2>/dev/null || exit 0
      if $ALIVE; then kill -TERM -\"\$(cat runs/launch/pid)\" && echo \"$HOST: sent SIGTERM to the run (it saves a checkpoint, then exits)\";
      else echo \"$HOST: no run going\"; fi"
    ;;
  *)
    die "unknown command '$COMMAND' (setup, sft, grpo, eval, status, logs, stop)"
    ;;
esac

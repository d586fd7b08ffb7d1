"""Memory planner: will a training step of this model fit per device on this mesh?

Counts, per device, the buffers XLA allocates for the real train step
(`jaxrepair.train.trainer.build_step_fn` under `Trainer`'s shardings, with the SFT or GRPO
loss) so a researcher can choose the mesh and batch before queueing on a pod:

- persistent state: parameters, AdamW moments (both in the parameter dtype, as optax keeps
  them), the batch arrays;
- what lives through the backward pass: gradients (plus an accumulator with grad_accum > 1),
  the compute-dtype copy of the parameters, one gathered layer and its unreduced gradient,
  the gathered lm head with its full-vocabulary gradient, the activations the remat policy
  saves, the packed-row segment mask [B, 1, T, T] (dense kernels only);
- the largest transient: the recomputed backward of one layer (dense attention keeps four
  [B, N, T, T] float32 buffers and a broadcast mask; "blocked" the causal part of them; the
  flash kernels "cudnn" and "splash" only [T, block] tiles), the lm-head chunk of the loss, or
  the optimizer update;
- LoRA (`[lora]` enabled): the frozen base in the parameter dtype without gradients or
  moments; the adapters, their gradients and AdamW moments in float32; the merged weights
  (compute dtype) the forward runs on and the gradient of the merged targeted matrices, which
  the backward pass materialises before reducing it to the adapters' gradients;
- GRPO only: with the rollout engine (`[engine]`), its own weights in its compute dtype
  (tensor-parallel over `engine.tensor` devices, the embedding replicated), its paged KV pool
  and the larger of its prefill chunk and its decode step; without it, the static sampler's KV
  cache (in the parameter dtype, the params it samples with) and its prefill (on CPU, not
  counted here, `generate` also holds a copy of the layer weights for the call); the overlap
  snapshots (a copy of the params for the batch being collected while
  the previous batch's behaviour params are still in use), the frozen reference params when
  kl_beta > 0; the learner trains `minibatch_size` rows per update.

`tests/test_planner_vs_xla.py` compiles the train step on 8 CPU devices and requires
plan / XLA between 1.0 and 1.5; XLA's own buffer assignment
(`jax.jit(step).lower(...).compile().memory_analysis()`) stays the final word on hardware.
"""

from __future__ import annotations

import dataclasses
import math
import types
from pathlib import Path
from typing import Any

from jaxrepair.config import EngineSection, LoraConfig
from jaxrepair.model.blocked_attention import block_size
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.sharding import (
    ShardingError,
    check_mesh_fits,
    logical_to_spec,
    param_logical_axes,
    resolve_mesh_shape,
)

GIB = 1024**3
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FLASH_IMPLS = ("cudnn", "splash")  # kernels that never hold a [T, T] buffer
FLASH_BLOCK = 512  # query/key tile of the flash kernels (rows of a [T, block] score tile)
HEADROOM = 0.9  # a plan fits when it uses at most this share of the device memory
KINDS = ("sft", "grpo")


class PlanError(ValueError):
    """A plan request that cannot be answered as given (bad mesh, batch or option)."""


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    model: str
    num_params: int
    mesh: dict[str, int]
    per_device_batch: float
    seq_len: int
    rows: dict[str, float]  # component -> bytes per device
    hbm_bytes: float
    kind: str = "sft"
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return sum(self.rows.values())

    @property
    def fits(self) -> bool:
        return self.total <= HEADROOM * self.hbm_bytes  # 10% for XLA scratch and fragmentation


def parse_mesh(text: str) -> dict[str, int]:
    """ "data=2,fsdp=-1,tensor=4" -> sizes; a malformed item raises PlanError naming it."""
    out: dict[str, int] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = int(value) if sep else int("x")
        except ValueError:
            raise PlanError(
                f"mesh item {item!r} is not axis=size (e.g. data=2,fsdp=-1,tensor=4)"
            ) from None
    return out


def _model_config(model: str) -> Qwen3Config:
    if Path(model).is_dir():
        return Qwen3Config.from_hf_dir(model)
    return Qwen3Config.preset(model)


def _shard_bytes(
    cfg: Qwen3Config, sizes: dict[str, int], dtype_bytes: int, only: set[str] | None = None
) -> float:
    """Exact per-device bytes of the params under the sharding rules (norms replicated);
    `only`: just these layer parameters (e.g. the LoRA-targeted matrices)."""
    from jaxrepair.model.qwen3 import param_shapes

    mesh = types.SimpleNamespace(shape=sizes)
    shapes = param_shapes(cfg)
    if only is not None:
        shapes = {"layers": {k: v for k, v in shapes["layers"].items() if k in only}}
    axes = param_logical_axes(shapes)
    total = 0.0

    def add(ax: tuple[str, ...], shape: tuple[int, ...]) -> None:
        nonlocal total
        spec = logical_to_spec(ax, mesh, shape)
        n = 1
        for dim, part in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
            split = 1
            if part is not None:
                for a in (part,) if isinstance(part, str) else part:
                    split *= sizes[a]
            n *= -(-dim // split)
        total += n * dtype_bytes

    for key, value in shapes.items():
        if isinstance(value, dict):
            for k, sds in value.items():
                add(axes[key][k], sds.shape)
        else:
            add(axes[key], value.shape)
    return total


def _adapter_bytes(cfg: Qwen3Config, lora: LoraConfig, sizes: dict[str, int]) -> float:
    """Per-device bytes of the float32 LoRA adapters, sharded like their base matrices."""
    import jax

    from jaxrepair.model.lora import adapter_axes, adapter_shapes

    mesh = types.SimpleNamespace(shape=sizes)
    total = 0.0
    pairs = zip(
        jax.tree.leaves(adapter_axes(cfg, lora), is_leaf=lambda x: isinstance(x, tuple)),
        jax.tree.leaves(adapter_shapes(cfg, lora)),
        strict=True,
    )
    for ax, sds in pairs:
        spec = tuple(logical_to_spec(ax, mesh, sds.shape))
        n = 1
        for dim, part in zip(sds.shape, spec + (None,) * (len(sds.shape) - len(spec)), strict=True):
            split = 1
            if part is not None:
                for a in (part,) if isinstance(part, str) else part:
                    split *= sizes[a]
            n *= -(-dim // split)
        total += n * 4
    return total


def _split(n: int, tp: int) -> float:
    """n divided over the tensor axis when it divides (the sharding rules' fallback otherwise)."""
    return n / tp if n % tp == 0 else float(n)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _attention_scores(impl: str, rows: float, heads: float, t: int) -> float:
    """Elements of one [rows, heads, T, T]-like score buffer as the kernel materialises it."""
    if impl in FLASH_IMPLS:
        return rows * heads * t * min(t, FLASH_BLOCK)
    if impl == "blocked":  # the causal blocks (XLA may schedule a pass's blocks together)
        bq = block_size(t)
        n = -(-t // bq)
        return rows * heads * t * min(t, bq * (n + 1) / 2)
    return rows * heads * t * t


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
    attention_impl: str = "xla",
    grad_accum: int = 1,
    packed: bool = True,
    kind: str = "sft",
    generate_batch: int = 0,
    max_new_tokens: int = 0,
    overlap: bool = False,
    kl_beta: float = 0.0,
    engine: EngineSection | None = None,
    lora: LoraConfig | None = None,
) -> MemoryPlan:
    """Bytes per device for one training step with AdamW (see the module docstring).

    `global_batch` is the rows of one optimizer update (GRPO: the minibatch), split into
    `grad_accum` microbatches. For kind="grpo", `seq_len` is the longest transcript; the
    sampler runs `generate_batch` sequences with prompts of up to seq_len - max_new_tokens
    tokens (bucketed as the sampler pads them); `overlap` adds the params snapshots and runs
    the sampler's prefill during the update; `kl_beta > 0` adds the reference params;
    `engine` (an enabled `[engine]` section) counts the rollout engine instead of the sampler;
    `lora` (an enabled `[lora]` section) trains adapters on a frozen base.
    """
    from jaxrepair.model.config import ATTENTION_IMPLS, REMAT_POLICIES

    if kind not in KINDS:
        raise PlanError(f"kind={kind!r}; choose one of {KINDS}")
    if remat not in REMAT_POLICIES:
        raise PlanError(f"remat={remat!r}; choose one of {REMAT_POLICIES}")
    if attention_impl not in ATTENTION_IMPLS:
        raise PlanError(f"attention_impl={attention_impl!r}; choose one of {ATTENTION_IMPLS}")
    if attention_impl == "auto":  # plans are for accelerators, where "auto" is "xla"
        attention_impl = "xla"
    for name, dt in (("param_dtype", param_dtype), ("compute_dtype", compute_dtype)):
        if dt not in _BYTES:
            raise PlanError(f"{name}={dt!r}; choose one of {tuple(_BYTES)}")
    if global_batch < 1 or seq_len < 1 or grad_accum < 1:
        raise PlanError(
            f"batch={global_batch}, seq={seq_len}, grad_accum={grad_accum}: all must be >= 1"
        )
    cfg = _model_config(model)
    try:
        sizes = resolve_mesh_shape(mesh, devices)
        check_mesh_fits(cfg, types.SimpleNamespace(shape=sizes))
    except ShardingError as e:
        raise PlanError(str(e)) from None
    dp = sizes["data"] * sizes["fsdp"]
    tp = sizes["tensor"]
    pb, cb = _BYTES[param_dtype], _BYTES[compute_dtype]
    t, d, L = seq_len, cfg.hidden_size, cfg.num_hidden_layers
    b = global_batch / (dp * grad_accum)  # rows per device per microbatch
    heads = _split(cfg.num_attention_heads, tp)
    q = _split(cfg.q_size, tp)
    kv = _split(cfg.kv_size, tp)
    mlp = (
        cfg.num_experts_per_tok * cfg.moe_intermediate_size if cfg.is_moe else cfg.intermediate_size
    )
    f = _split(mlp, tp)
    vt = _split(cfg.vocab_size, tp)
    # kernels whose backward keeps no [T, T] array ("blocked" saves the row log-sum-exp too)
    flash = attention_impl in FLASH_IMPLS
    lse_only = flash or attention_impl == "blocked"
    n = cfg.num_params()
    params = _shard_bytes(cfg, sizes, pb)
    layer_full = (n - cfg.vocab_size * d * (1 if cfg.tie_word_embeddings else 2)) / L / tp
    notes: list[str] = []

    keys = 5 if kind == "sft" else 6
    trained = params  # bytes of the tree the optimizer updates
    if lora is None:
        rows: dict[str, float] = {
            f"parameters ({param_dtype})": params,
            f"AdamW moments (2 x {param_dtype})": 2 * params,
        }
        rows["batch arrays"] = global_batch / dp * t * 4 * keys
        rows[f"gradients ({param_dtype})"] = params
        if grad_accum > 1:
            rows[f"gradient accumulator (grad_accum={grad_accum})"] = params
        if param_dtype != compute_dtype:
            rows[f"compute-dtype copy of params ({compute_dtype})"] = params * cb / pb
    else:
        from jaxrepair.model.lora import num_adapter_params, target_specs

        trained = _adapter_bytes(cfg, lora, sizes)
        targeted = _shard_bytes(cfg, sizes, cb, {p.ours for p in target_specs(cfg, lora)})
        rows = {
            f"frozen base ({param_dtype}, no grads or moments)": params,
            "LoRA adapters (float32)": trained,
            "AdamW moments (2 x float32, adapters)": 2 * trained,
        }
        rows["batch arrays"] = global_batch / dp * t * 4 * keys
        rows["adapter gradients (float32)"] = trained
        if grad_accum > 1:
            rows[f"gradient accumulator (grad_accum={grad_accum})"] = trained
        merged = targeted
        if param_dtype != compute_dtype:
            merged = params * cb / pb
        rows[f"merged weights ({compute_dtype})"] = merged
        rows[f"gradient of the merged targeted matrices ({compute_dtype})"] = targeted
        notes.append(
            f"LoRA rank {lora.rank} on {','.join(lora.targets)}: "
            f"{num_adapter_params(cfg, lora) / 1e6:.1f}M trainable parameters"
        )
    rows["gathered layer weights + unreduced layer grads"] = layer_full * (2 * cb + 4)
    heads_out = 1 if cfg.tie_word_embeddings else 2
    if lora is None:
        rows["gathered lm head + full-vocab grads"] = vt * d * (cb + 4 * heads_out)
    else:  # the embedding and lm head are frozen: gathered, no gradient
        rows["gathered lm head (frozen)"] = vt * d * cb

    # activations the remat policy keeps for the backward pass ([L, B, T, ...] stacks)
    tok = b * t
    scores = _attention_scores(attention_impl, b, heads, t)
    if remat == "full":
        saved = L * tok * d * cb
        label = "saved activations (remat=full: layer inputs)"
    elif remat == "save_dots":
        saved = L * tok * cb * (3 * d + q + 2 * kv + 2 * f)
        label = "saved activations (remat=save_dots: matmul outputs)"
    else:
        per_layer = tok * cb * (6 * d + 3 * (q + 2 * kv) + 4 * f)
        per_layer += (b * heads * t * 4) if lse_only else scores * (2 * 4 + 1)
        saved = L * per_layer
        label = "saved activations (remat=none: everything, scores included)"
    rows[label] = saved
    if packed and not flash:
        rows["packed-row segment mask [B,1,T,T] bool"] = b * t * t
    elif not packed and kind == "sft":
        notes.append("unpacked rows: causal mask only")

    # the largest transient: a layer's recomputed backward, the loss chunk, or the update
    layer_linear = tok * cb * (4 * d + 2 * (q + 2 * kv) + 3 * f)
    if flash:
        attn = 4 * scores * 4 + b * heads * t * 4 * 2
        attn_label = f"one layer backward ({attention_impl} flash: [T,{FLASH_BLOCK}] tiles)"
    elif attention_impl == "blocked":
        # recomputed and masked scores, probabilities and their gradients (XLA overlaps the
        # blocks; calibrated against buffer assignment)
        attn = scores * 4 * 5 + b * heads * t * 4 * 2
        attn_label = "one layer backward (blocked: causal blocks of [B,N,T,T] f32 x5)"
    else:
        attn = scores * (4 * 4 + 1)
        attn_label = f"one layer backward ({attention_impl}: [B,N,T,T] f32 x4 + mask)"
    c = min(t, logits_chunk)
    copies = 2 if kind == "sft" else 3  # GRPO keeps the softmax for the entropy too
    loss_chunk = b * c * vt * 4 * copies + tok * d * 4
    update = 2 * trained
    transients = {
        attn_label: attn + layer_linear,
        f"loss chunk ([B,{c},V] f32 x{copies})": loss_chunk,
        "optimizer update temporaries": update,
    }
    name = max(transients, key=lambda k: transients[k])
    rows[f"largest transient: {name}"] = transients[name]

    if kind == "grpo":
        _grpo_rows(
            rows,
            cfg,
            sizes,
            params,
            pb,
            t,
            generate_batch,
            max_new_tokens,
            overlap,
            kl_beta,
            attention_impl,
            notes,
            engine,
            cb,
            lora is not None,
        )
    return MemoryPlan(
        model=model,
        num_params=n,
        mesh=sizes,
        per_device_batch=b,
        seq_len=t,
        rows=rows,
        hbm_bytes=hbm_gib * GIB,
        kind=kind,
        notes=tuple(notes),
    )


def _grpo_rows(
    rows: dict[str, float],
    cfg: Qwen3Config,
    sizes: dict[str, int],
    params: float,
    pb: int,
    seq_len: int,
    generate_batch: int,
    max_new_tokens: int,
    overlap: bool,
    kl_beta: float,
    impl: str,
    notes: list[str],
    engine: EngineSection | None = None,
    compute_bytes: int = 2,
    lora: bool = False,
) -> None:
    """The sampler (or the rollout engine) and the param copies GRPO holds next to the train
    step."""
    dp = sizes["data"] * sizes["fsdp"]
    tp = sizes["tensor"]
    if overlap:
        snap = params * compute_bytes / pb if lora else params  # LoRA: merged params
        rows["overlap snapshots (2 x params: collecting + behaviour)"] = 2 * snap
    if kl_beta > 0 and not lora:  # LoRA: the reference is the frozen base itself
        rows["reference params (kl_beta > 0)"] = params
    if engine is not None:
        rows.update(engine_rows(cfg, engine, seq_len, compute_bytes))
        notes.append(f"rollout engine on {engine.tensor} device(s) of each process")
        return
    if generate_batch < 1 or max_new_tokens < 1:
        notes.append("no sampler counted (generate_batch or max_new_tokens unset)")
        return
    # the sampler pads the batch to a power of two (a multiple of the data-parallel size) and
    # the prompt and new-token counts to powers of two (jaxrepair.model.sampler.Buckets)
    gb = _pow2_at_least(generate_batch)
    gb = -(-gb // dp) * dp
    # a prompt leaves room for the completion in a transcript of at most seq_len tokens
    prompt = max(16, _pow2_at_least(seq_len - max_new_tokens))
    s = prompt + max(16, _pow2_at_least(max_new_tokens))
    bg = gb / dp
    kvh = _split(cfg.num_key_value_heads, tp)
    cache = cfg.num_hidden_layers * bg * s * 2 * kvh * cfg.head_dim * pb
    rows[f"sampler KV cache ({gb} seqs x {s} slots, param dtype)"] = cache
    heads = _split(cfg.num_attention_heads, tp)
    f = _split(cfg.intermediate_size, tp)
    # activations of one layer's prefill, counted in float32 (XLA:CPU computes bf16 dots in
    # float32; on TPU this over-counts a little), and the prompt's keys and values as the
    # layer scan stacks them before they are padded into the per-layer caches
    prefill_linear = bg * prompt * 4 * (4 * cfg.hidden_size + 2 * f)
    prefill_linear += cfg.num_hidden_layers * bg * prompt * 2 * kvh * cfg.head_dim * pb
    # prefill_cache builds a [B, 1, P, P] bool cache mask for every kernel; what the kernel
    # adds follows its mask path (jaxrepair.model.attention): "splash" runs the XLA kernel
    # there, "cudnn" turns the mask into a bias in the params dtype, "blocked" keeps the
    # causal blocks of the scores (XLA schedules the blocks together, measured)
    mask = bg * prompt * prompt
    if impl == "cudnn":
        attn = mask * pb + bg * heads * prompt * min(prompt, FLASH_BLOCK) * 4 * 2
        what = "cudnn: [P,P] bias"
    else:
        dense = "xla" if impl in FLASH_IMPLS else impl
        copies = 1.5 if impl == "blocked" else 2  # blocked frees each block's scores early
        attn = _attention_scores(dense, bg, heads, prompt) * 4 * copies
        what = f"{impl}: {'causal blocks of ' if impl == 'blocked' else ''}[B,N,P,P] f32 x{copies}"
        if impl == "splash":
            what += ", the XLA mask path"
    prefill = prefill_linear + mask + attn
    label = f"sampler prefill of {prompt} tokens ({what})"
    if overlap:  # generation of the next batch runs during the update
        rows[label] = prefill
    else:  # generation and training take turns: only the larger transient counts
        notes.append("overlap off: the KV cache is counted next to the train step (an upper bound)")
        key = next(k for k in rows if k.startswith("largest transient"))
        if prefill > rows[key]:
            del rows[key]
            rows[f"largest transient: {label}"] = prefill


def engine_rows(
    cfg: Qwen3Config, engine: EngineSection, max_seq_len: int, compute_bytes: int = 2
) -> dict[str, float]:
    """Bytes on each device of a rollout engine (`jaxrepair.engine.jax_engine.JaxEngine`):
    its weights (dtype "auto" = the compute dtype on accelerators) sharded as
    `engine_shardings` places them, its KV pool, and the larger transient of a prefill chunk
    (one layer's activations and [heads, chunk, max_seq_len] f32 scores) and a decode step
    (every slot's K and V of one layer gathered from the pool), as on accelerators. On CPU the
    decode keeps the running rows' K and V of every layer in scratch buffers instead
    (`paged_model.hoists_context`: host memory, not counted here)."""
    eb = _BYTES[engine.dtype] if engine.dtype != "auto" else compute_bytes
    tp = engine.tensor
    sizes = {"data": 1, "fsdp": 1, "tensor": tp}
    embed = cfg.vocab_size * cfg.hidden_size
    weights = _shard_bytes(cfg, sizes, eb) + embed * eb * (
        1 - 1 / tp if cfg.vocab_size % tp == 0 else 0
    )
    kvh = _split(cfg.num_key_value_heads, tp)
    pool = (
        cfg.num_hidden_layers * engine.num_blocks * engine.block_size * 2 * kvh * cfg.head_dim * eb
    )
    heads = _split(cfg.num_attention_heads, tp)
    f = _split(cfg.intermediate_size, tp)
    c = engine.prefill_chunk
    prefill = c * 4 * (4 * cfg.hidden_size + 2 * f) + heads * c * max_seq_len * 4 * 2
    decode = engine.slots * max_seq_len * 2 * kvh * cfg.head_dim * eb
    step = max(prefill, decode)
    what = f"prefill of {c} tokens" if prefill >= decode else f"decode of {engine.slots} slots"
    return {
        f"engine weights ({tp}-way tensor parallel)": weights,
        f"engine KV pool ({engine.num_blocks} x {engine.block_size} tokens)": pool,
        f"engine step transient ({what})": step,
    }


# ----------------------------------------------------------------------------- run configs
def infer_kind(run_config: Any) -> str:
    """ "sft" when the config names training files (SFT cannot run without them), else "grpo"."""
    return "sft" if run_config.data.train_paths else "grpo"


def update_rows(run_config: Any, kind: str) -> int:
    """Rows of one optimizer update: the SFT batch, or the GRPO minibatch."""
    if kind == "sft":
        return run_config.data.batch_size
    g = run_config.grpo
    return g.minibatch_size or g.tasks_per_step * g.group_size


def check_divisibility(run_config: Any, kind: str, sizes: dict[str, int]) -> None:
    """The trainer's batch rule (`Trainer._compile`): every update's rows divide evenly over
    the data-parallel devices x grad_accum; GRPO's whole batch divides into minibatches."""
    dp = sizes.get("data", 1) * sizes.get("fsdp", 1)
    accum = run_config.optim.grad_accum
    rows = update_rows(run_config, kind)
    if rows % (dp * accum):
        what = "data.batch_size" if kind == "sft" else "grpo.minibatch_size"
        raise PlanError(
            f"{what}={rows} rows must divide evenly over {dp} data-parallel devices x "
            f"grad_accum={accum} (= {dp * accum})"
        )
    if kind == "grpo":
        g = run_config.grpo
        total = g.tasks_per_step * g.group_size
        if total % rows:
            raise PlanError(
                f"grpo.tasks_per_step x group_size = {total} is not a multiple of the "
                f"minibatch of {rows} rows"
            )


def plan_for_config(
    run_config: Any,
    devices: int | None = None,
    hbm_gib: float | None = None,
    kind: str | None = None,
) -> MemoryPlan:
    """The plan of a `jaxrepair.config.RunConfig` at `devices` (default: the config's
    mesh.devices) with `hbm_gib` per device (default: mesh.hbm_gib); checks the batch rule."""
    kind = kind or infer_kind(run_config)
    if kind not in KINDS:
        raise PlanError(f"kind={kind!r}; choose one of {KINDS}")
    m = run_config.mesh
    devices = devices if devices is not None else getattr(m, "devices", None)
    hbm_gib = hbm_gib if hbm_gib is not None else getattr(m, "hbm_gib", None)
    if devices is None:
        raise PlanError("no device count: give --devices or set mesh.devices in the config")
    if hbm_gib is None:
        raise PlanError("no memory per device: give --hbm-gib or set mesh.hbm_gib in the config")
    try:
        sizes = resolve_mesh_shape(m.shape(), devices)
    except ShardingError as e:
        raise PlanError(str(e)) from None
    check_divisibility(run_config, kind, sizes)
    model = run_config.model.hf_dir or run_config.model.preset
    g = run_config.grpo
    return plan_memory(
        model,
        devices=devices,
        mesh=sizes,
        global_batch=update_rows(run_config, kind),
        seq_len=run_config.data.seq_len,
        remat=run_config.model.remat,
        param_dtype=run_config.model.param_dtype,
        compute_dtype=run_config.model.dtype,
        hbm_gib=hbm_gib,
        attention_impl=run_config.model.attention_impl,
        grad_accum=run_config.optim.grad_accum,
        packed=run_config.data.packing if kind == "sft" else False,
        kind=kind,
        generate_batch=g.generate_batch if kind == "grpo" else 0,
        max_new_tokens=g.max_new_tokens if kind == "grpo" else 0,
        overlap=g.overlap if kind == "grpo" else False,
        kl_beta=g.kl_beta if kind == "grpo" else 0.0,
        engine=run_config.engine if kind == "grpo" and run_config.engine.enabled else None,
        lora=run_config.lora if run_config.lora.enabled else None,
    )


def format_plan(plan: MemoryPlan) -> str:
    """A row per component, the total and the verdict."""
    lines = [
        f"model {plan.model} ({plan.kind}): {plan.num_params / 1e9:.2f}B params; mesh "
        f"{plan.mesh}; {plan.per_device_batch:g} sequences x {plan.seq_len} tokens per device "
        "per microbatch",
    ]
    width = max(48, *(len(k) for k in plan.rows))
    for name, v in plan.rows.items():
        lines.append(f"  {name:<{width}s} {v / GIB:9.2f} GiB")
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    lines.append(
        f"  {'total':<{width}s} {plan.total / GIB:9.2f} GiB of {plan.hbm_bytes / GIB:.0f} GiB "
        f"(limit {HEADROOM:.0%}) -> {verdict}"
    )
    lines.extend(f"  note: {n}" for n in plan.notes)
    return "\n".join(lines)

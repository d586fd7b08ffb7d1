"""The training loop shared by SFT and GRPO: optimizer, sharded jitted step, metrics, checkpoints.

    opt = make_optimizer(lr=..., warmup_steps=..., total_steps=..., ...)
    trainer = Trainer(model_cfg, params, loss_fn, opt, mesh=mesh, out_dir=..., ...)
    trainer.restore_or_init(loader)        # resumes params, opt state, step, data position, rng
    summary = trainer.fit(loader, total_steps, eval_fn=...)

`loss_fn(params, batch, rng) -> (loss, metrics)` sees params already cast to the compute dtype
(fp32 master weights stay in the optimizer). A batch is a dict of arrays whose leading axis is
the global batch (rows); with gradient accumulation the step splits it into `accum_steps`
microbatches and scans over them, so one call = one optimizer update. Metrics named `num_*`
are summed over microbatches, the others averaged.

The data loader protocol: `next_batch() -> dict[str, np.ndarray]`, `state_dict() -> dict` (JSON)
and `load_state_dict(d)`; its state is saved with every checkpoint so a resumed run sees exactly
the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrepair.config import LoraConfig, OptimConfig
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.sharding import param_shardings
from jaxrepair.multihost import is_primary
from jaxrepair.train.checkpoint import (
    Checkpointer,
    PreemptionSync,
    abstract_like,
    config_to_json,
    rng_from_json,
    rng_to_json,
)
from jaxrepair.train.storage import check_shared_storage, is_uri, run_path

if TYPE_CHECKING:
    from jaxrepair.train.run_setup import TrainingStart

log = logging.getLogger(__name__)

Params = dict[str, Any]
LossFn = Callable[[Params, dict[str, jax.Array], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
BATCH_AXES = ("data", "fsdp")
# When set, `fit` adds this process's `shard_digests(params)` to its summary (diagnostics/tests).
DIGEST_ENV = "JAXREPAIR_PARAMS_DIGEST"


class Resumable(Protocol):
    """A run's position that checkpoints save and resumes restore (SFT's loader, GRPO's state)."""

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class DataLoader(Resumable, Protocol):
    def next_batch(self) -> dict[str, np.ndarray]: ...


# ----------------------------------------------------------------------------- optimizer
def lr_schedule(
    lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.1,
) -> optax.Schedule:
    """Linear warmup to `lr` over `warmup_steps` (step 0 already trains at lr/warmup), then
    cosine or linear decay to `lr * min_lr_ratio` at `total_steps`, or constant."""
    if schedule not in ("cosine", "linear", "constant"):
        raise ValueError(f"schedule={schedule!r}; choose cosine, linear or constant")
    lo = lr * min_lr_ratio
    decay = max(total_steps - warmup_steps, 1)

    def fn(step):
        s = jnp.asarray(step, jnp.float32)
        warm = lr * (s + 1) / max(warmup_steps, 1)
        frac = jnp.clip((s - warmup_steps) / decay, 0.0, 1.0)
        if schedule == "cosine":
            after = lo + (lr - lo) * 0.5 * (1 + jnp.cos(jnp.pi * frac))
        elif schedule == "linear":
            after = lr + (lo - lr) * frac
        else:
            after = jnp.asarray(lr, jnp.float32)
        return jnp.where(s < warmup_steps, warm, after)

    return fn


def _decay_mask(params: Params) -> Any:
    """Weight decay on matrices only (not on norms)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: "norm" not in jax.tree_util.keystr(path), params
    )


def make_optimizer(
    lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.0,
    clip_norm: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (decoupled weight decay, norms excluded) after global-norm clipping; + its schedule."""
    sched = lr_schedule(lr, total_steps, warmup_steps, schedule, min_lr_ratio)
    parts = []
    if clip_norm > 0:
        parts.append(optax.clip_by_global_norm(clip_norm))
    parts.append(
        optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=_decay_mask)
    )
    return optax.chain(*parts), sched


def optimizer_from_config(optim: OptimConfig, total_steps: int):
    """make_optimizer from a `jaxrepair.config.OptimConfig`."""
    return make_optimizer(
        lr=optim.lr,
        total_steps=total_steps,
        warmup_steps=optim.warmup_steps,
        schedule=optim.schedule,
        min_lr_ratio=optim.min_lr_ratio,
        weight_decay=optim.weight_decay,
        clip_norm=optim.clip_norm,
        b1=optim.b1,
        b2=optim.b2,
        eps=optim.eps,
    )


# ----------------------------------------------------------------------------- shardings
def _replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def single_device_mesh() -> Mesh:
    from jaxrepair.model.sharding import make_mesh

    return make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


def state_shardings(
    optimizer: optax.GradientTransformation,
    params_abstract: Params,
    mesh: Mesh,
    p_sh: Any | None = None,
) -> dict[str, Any]:
    """NamedShardings of {"step", "params", "opt_state"}: optimizer moments follow their
    parameter's sharding (via optax.tree_map_params), scalars are replicated. `p_sh` gives
    the trained tree's shardings when it is not model params (LoRA adapters)."""
    if p_sh is None:
        p_sh = param_shardings(params_abstract, mesh)
    opt_abstract = jax.eval_shape(optimizer.init, params_abstract)
    o_sh = optax.tree_map_params(
        optimizer,
        lambda _s, sh: sh,
        opt_abstract,
        p_sh,
        transform_non_params=lambda _: _replicated(mesh),
        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct),
    )
    return {"step": _replicated(mesh), "params": p_sh, "opt_state": o_sh}


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    axes = tuple(a for a in BATCH_AXES if mesh.shape.get(a, 1) > 1)
    first = None if not axes else (axes[0] if len(axes) == 1 else axes)
    return NamedSharding(mesh, PartitionSpec(first, *([None] * (ndim - 1))))


def global_batch(x: np.ndarray, mesh: Mesh) -> jax.Array:
    """A host array every process holds in full, placed with its rows split over the batch axes
    (`batch_sharding`); each process fills only its own shards, so nothing crosses hosts."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, batch_sharding(mesh, x.ndim), lambda i: x[i])


def batch_parallelism(mesh: Mesh) -> int:
    return math.prod(mesh.shape.get(a, 1) for a in BATCH_AXES)


# ----------------------------------------------------------------------------- the step
def _cast_floats(tree: Any, dtype) -> Any:
    if dtype is None:
        return tree
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


# (trained tree, frozen tree, rng) -> the params the loss sees (e.g. LoRA's merge)
ModelParamsFn = Callable[[Any, Any, jax.Array], Params]


def build_step_fn(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    compute_dtype=None,
    accum_steps: int = 1,
    model_params: ModelParamsFn | None = None,
) -> Callable:
    """(state, frozen, batch, rng) -> (state, metrics): grads (accumulated), clip, AdamW,
    metrics. Gradients are taken w.r.t. state["params"] only; `frozen` (None, or a LoRA run's
    base weights) is a constant input that `model_params` combines with them."""

    def loss_cast(params, frozen, batch, rng):
        if model_params is None:
            model = _cast_floats(params, compute_dtype)
        else:
            model = model_params(params, frozen, jax.random.fold_in(rng, 0x10A))
        loss, metrics = loss_fn(model, batch, rng)
        return loss.astype(jnp.float32), metrics

    grad_fn = jax.value_and_grad(loss_cast, has_aux=True)

    def step_fn(state, frozen, batch, rng):
        params = state["params"]
        if accum_steps == 1:
            (loss, metrics), grads = grad_fn(params, frozen, batch, rng)
        else:

            def split(x):
                if x.shape[0] % accum_steps:
                    raise ValueError(
                        f"batch of {x.shape[0]} rows is not divisible by grad_accum={accum_steps}"
                    )
                return x.reshape(accum_steps, x.shape[0] // accum_steps, *x.shape[1:])

            micro = jax.tree.map(split, batch)

            def body(carry, xs):
                mb, i = xs
                (li, m), g = grad_fn(params, frozen, mb, jax.random.fold_in(rng, i))
                acc_l, acc_m, acc_g = carry
                return (
                    acc_l + li,
                    jax.tree.map(jnp.add, acc_m, m),
                    jax.tree.map(jnp.add, acc_g, g),
                ), None

            first = jax.tree.map(lambda x: x[0], micro)
            m_shape = jax.eval_shape(lambda: grad_fn(params, frozen, first, rng)[0][1])
            init = (
                jnp.zeros((), jnp.float32),
                jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m_shape),
                jax.tree.map(jnp.zeros_like, params),
            )
            (loss, metrics, grads), _ = jax.lax.scan(body, init, (micro, jnp.arange(accum_steps)))
            loss = loss / accum_steps
            grads = jax.tree.map(lambda g: g / accum_steps, grads)
            metrics = {
                k: (v if k.startswith("num_") else v / accum_steps) for k, v in metrics.items()
            }
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        out = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state["step"]), **metrics}
        return {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}, out

    return step_fn


# ----------------------------------------------------------------------------- digests
def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _index_str(index: tuple[slice, ...]) -> str:
    return ",".join(
        f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}" for s in index
    )


def shard_digests(tree: Any) -> dict[str, list[str]]:
    """sha256 of every addressable shard of every array in `tree`, by "a/b@start:stop,...".

    Reads only this process's shards (never a non-addressable array), so any process can call
    it alone. Each copy of a replicated shard on this process is listed, so comparing the lists
    of all processes with one reference proves every copy of the parameters is bitwise equal.
    """
    out: dict[str, list[str]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = _path_name(path)
        if not isinstance(leaf, jax.Array):
            leaf = jnp.asarray(leaf)
        for shard in sorted(leaf.addressable_shards, key=lambda s: s.device.id):
            data = np.ascontiguousarray(np.asarray(shard.data))
            key = f"{name}@{_index_str(shard.index)}"
            out.setdefault(key, []).append(hashlib.sha256(data.tobytes()).hexdigest())
    return out


# ----------------------------------------------------------------------------- metrics
def _summary_writer_class() -> type:
    """tensorboardX's SummaryWriter, imported without PyTorch.

    tensorboardX imports torch whenever it is installed (only to accept torch tensors): seconds
    of import and torch's thread pools in the trainer's process, beside XLA's. Unless torch is
    already loaded, its import is refused (None in sys.modules) while tensorboardX loads."""
    refuse = "torch" not in sys.modules
    if refuse:
        sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    finally:
        if refuse:
            del sys.modules["torch"]
    return SummaryWriter


class MetricsLogger:
    """metrics.jsonl + TensorBoard (tensorboardX) + a tqdm progress bar, on process 0 only.

    Every process may call `log` (the rows are the same everywhere); only process 0 writes, so
    a multi-process run has each row once. Local out_dirs append; on object storage (no
    append) the whole file is rewritten at most every `upload_every_s` seconds and at close.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        total_steps: int,
        start_step: int = 0,
        tensorboard: bool = True,
        progress: bool = True,
        upload_every_s: float = 30.0,
    ):
        self.out_dir = run_path(out_dir)
        self.active = is_primary()
        self.path = self.out_dir / "metrics.jsonl"
        self.jsonl = None
        self._rows: list[str] | None = None  # object storage: the whole file, rewritten
        self._uploaded = time.monotonic()
        self.upload_every_s = upload_every_s
        self.tb = None
        self.bar = None
        if not self.active:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if is_uri(self.out_dir):
            self._rows = self.path.read_text().splitlines(True) if self.path.exists() else []
        else:
            self.jsonl = open(self.path, "a")  # noqa: SIM115
        if tensorboard:
            try:
                self.tb = _summary_writer_class()(str(self.out_dir / "tb"))
            except ImportError:  # pragma: no cover - tensorboardX is a dependency
                log.warning("tensorboardX not installed; TensorBoard logging is off")
            except Exception as e:  # noqa: BLE001 - e.g. a storage scheme it cannot write
                log.warning("TensorBoard logging is off: %s", e)
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def _upload(self) -> None:
        if self._rows is not None:
            self.path.write_text("".join(self._rows))
            self._uploaded = time.monotonic()

    def log(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> None:
        if not self.active:
            return
        row = {"step": step, **{f"{prefix}{k}": float(v) for k, v in metrics.items()}}
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(row) + "\n")
            self.jsonl.flush()
        elif self._rows is not None:
            self._rows.append(json.dumps(row) + "\n")
            if time.monotonic() - self._uploaded >= self.upload_every_s:
                self._upload()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)
        if self.bar is not None and not prefix:
            shown = {k: row[k] for k in ("loss", "grad_norm", "lr", "tokens_per_s") if k in row}
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        self._upload()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- trainer
@dataclasses.dataclass(frozen=True)
class LoraRun:
    """A LoRA run's frozen base: how to load it (on the run's mesh, in its param dtype) and
    the pointer every checkpoint stores in place of its weights (`checkpoint.base_pointer`)."""

    config: LoraConfig
    load_base: Callable[[], Params]
    base_ref: Mapping[str, Any]


def lora_run(setup: TrainingStart) -> LoraRun | None:
    """The LoRA set-up of a training run (`[lora]` enabled), its base being the run's model
    source; None for full fine-tuning."""
    from jaxrepair.train.checkpoint import base_pointer

    lora = setup.config.lora
    if not lora.enabled:
        return None
    src = setup.source
    ref = base_pointer(src.kind, src.path, src.cfg, setup.config.train.seed)
    return LoraRun(lora, setup.initial_params, ref)


class Trainer:
    """Holds the sharded train state and runs the loop with checkpoints and preemption.

    `params` are taken over: their device buffers are donated to the first step (pass host
    arrays, or a copy, to keep using them). GRPO-style callers drive `train_step(batch)`
    themselves and call `save(state_source)` / `restore(state_source, abstract)` with any
    object that has `state_dict()` / `load_state_dict()`; SFT uses `fit`.

    With `use_lora` (before set_params/restore) the trained tree is LoRA adapters (fp32, with
    the only optimizer state), the params given to `set_params` become the frozen base (a
    constant input of the step, never donated), `params` is the merged model and checkpoints
    hold the adapters plus a pointer to the base.
    """

    def __init__(
        self,
        model_cfg: Qwen3Config,
        params: Params | None,
        loss_fn: LossFn,
        optimizer: tuple[optax.GradientTransformation, optax.Schedule],
        *,
        mesh: Mesh | None = None,
        compute_dtype=None,
        accum_steps: int = 1,
        out_dir: str | os.PathLike,
        seed: int = 0,
        checkpoint_every: int = 0,
        checkpoint_keep: int = 3,
        async_checkpoint: bool = True,
        log_every: int = 1,
        tensorboard: bool = True,
        progress: bool = True,
        tokens_key: str = "segment_ids",
        extra_meta: Mapping[str, Any] | None = None,
    ):
        self.model_cfg = model_cfg
        self.mesh = mesh if mesh is not None else single_device_mesh()
        self.optimizer, self.schedule = optimizer
        self.accum_steps = accum_steps
        self.out_dir = run_path(out_dir)
        # a collective: every process must see this directory before orbax writes to it
        check_shared_storage(self.out_dir)
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.tensorboard = tensorboard
        self.progress = progress
        self.tokens_key = tokens_key
        self.extra_meta = dict(extra_meta or {})
        self.rng = jax.random.key(seed)
        self.ckpt = Checkpointer(self.out_dir / "checkpoints", checkpoint_keep, async_checkpoint)
        self._param_shapes = None
        self._loss_fn, self._compute_dtype = loss_fn, compute_dtype
        self.lora: LoraRun | None = None
        self.base: Params | None = None  # a LoRA run's frozen weights
        self._merged: tuple[int, Params] | None = None
        self._merge_jit: Callable | None = None
        self.state: dict[str, Any] | None = None
        self._step = 0
        self._saved_step: int | None = None
        if params is not None:
            self.set_params(params)
        self._step_fn = build_step_fn(
            loss_fn, self.optimizer, self.schedule, compute_dtype, accum_steps
        )
        self._jitted = None

    # ------------------------------------------------------------------ state
    @property
    def step(self) -> int:
        """Optimizer updates done so far (tracked on the host: reading it never syncs)."""
        return self._step

    @property
    def trainable(self) -> Any:
        """The tree the optimizer updates: the params, or a LoRA run's adapters."""
        assert self.state is not None
        return self.state["params"]

    @property
    def params(self) -> Params:
        """The model's params; a LoRA run's are base + adapters merged in the compute dtype
        (computed once per step)."""
        assert self.state is not None
        if self.lora is None:
            return self.state["params"]
        if self._merged is None or self._merged[0] != self.step:
            assert self._merge_jit is not None and self.base is not None
            self._merged = (self.step, self._merge_jit(self.base, self.state["params"]))
        return self._merged[1]

    def use_lora(self, run: LoraRun) -> None:
        """Train LoRA adapters on a frozen base (call before set_params / restore)."""
        from jaxrepair.model.lora import merge

        if self.state is not None:
            raise RuntimeError("use_lora must come before set_params / restore")
        cfg, lora, compute = self.model_cfg, run.config, self._compute_dtype
        self.lora = run

        def model_params(adapters, base, rng):
            dtype = compute if compute is not None else base["embed"].dtype
            return merge(base, adapters, cfg, lora, dtype, rng if lora.dropout > 0 else None)

        self._step_fn = build_step_fn(
            self._loss_fn,
            self.optimizer,
            self.schedule,
            compute,
            self.accum_steps,
            model_params=model_params,
        )

    def _set_base(self, base: Params) -> None:
        from jaxrepair.model.lora import merge

        assert self.lora is not None
        b_sh = param_shardings(base, self.mesh)
        self.base = jax.device_put(base, b_sh)
        cfg, lora, compute = self.model_cfg, self.lora.config, self._compute_dtype
        self._merge_jit = jax.jit(lambda b, a: merge(b, a, cfg, lora, compute), out_shardings=b_sh)
        self._merged = None

    def _trained_abstract(self, params_abstract: Params) -> Any:
        if self.lora is None:
            return params_abstract
        from jaxrepair.model.lora import adapter_shapes

        return adapter_shapes(self.model_cfg, self.lora.config)

    def _shardings(self, params_abstract: Params) -> dict[str, Any]:
        if self.lora is None:
            return state_shardings(self.optimizer, params_abstract, self.mesh)
        from jaxrepair.model.lora import adapter_shardings

        p_sh = adapter_shardings(self.model_cfg, self.lora.config, self.mesh)
        return state_shardings(self.optimizer, params_abstract, self.mesh, p_sh)

    def set_params(self, params: Params, step: int = 0) -> None:
        """Start from `params` with a fresh optimizer state (placed on the mesh); in a LoRA
        run `params` are the frozen base and the adapters start at B = 0."""
        if self.lora is not None:
            from jaxrepair.model.lora import init_adapters

            self._set_base(params)
            key = jax.random.fold_in(self.rng, 0x10A)
            params = init_adapters(self.model_cfg, self.lora.config, key, self.mesh)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
        self._param_shapes = abstract
        sh = self._shardings(abstract)
        params = jax.device_put(params, sh["params"])
        opt_state = jax.jit(self.optimizer.init, out_shardings=sh["opt_state"])(params)
        step_arr = jax.device_put(jnp.asarray(step, jnp.int32), sh["step"])
        self.state = {"step": step_arr, "params": params, "opt_state": opt_state}
        self._step = step

    def restore(self, loader: Resumable | None, params_abstract: Params) -> bool:
        """Resume from the newest good checkpoint of this run; False when there is none.
        A LoRA run restores its adapters and loads the base its checkpoint points to."""
        params_abstract = self._trained_abstract(params_abstract)
        sh = self._shardings(params_abstract)
        opt_abstract = jax.eval_shape(self.optimizer.init, params_abstract)
        restored = self.ckpt.restore(
            abstract_like(params_abstract, sh["params"]),
            abstract_like(opt_abstract, sh["opt_state"]),
        )
        if restored is None:
            return False
        if restored.opt_state is None:  # pragma: no cover - run checkpoints always have it
            raise RuntimeError("run checkpoint lacks optimizer state")
        if self.lora is not None:
            from jaxrepair.train.checkpoint import check_base_pointer

            check_base_pointer(restored.meta, self.lora.base_ref, str(self.ckpt.directory))
            self._set_base(self.lora.load_base())
        self._param_shapes = params_abstract
        step_arr = jax.device_put(jnp.asarray(restored.step, jnp.int32), sh["step"])
        self.state = {"step": step_arr, "params": restored.params, "opt_state": restored.opt_state}
        self._step = self._saved_step = restored.step
        self.rng = rng_from_json(restored.meta["rng"])
        if loader is not None and restored.meta.get("data") is not None:
            loader.load_state_dict(restored.meta["data"])
        log.info("resumed at step %d", restored.step)
        return True

    def save(self, loader: Resumable | None) -> None:
        assert self.state is not None
        meta = {
            "rng": rng_to_json(self.rng),
            "data": None if loader is None else loader.state_dict(),
            "model_config": config_to_json(self.model_cfg),
            "param_dtype": jnp.dtype(jax.tree.leaves(self.state["params"])[0].dtype).name,
            **self.extra_meta,
        }
        if self.lora is not None:
            from jaxrepair.train.checkpoint import lora_meta

            assert self.base is not None
            meta.update(lora_meta(self.lora.config, self.lora.base_ref, self.base))
        self.ckpt.save(self.step, self.state["params"], self.state["opt_state"], meta)
        self._saved_step = self.step

    # ------------------------------------------------------------------ stepping
    def _compile(self, batch: Mapping[str, np.ndarray]) -> Callable:
        assert self.state is not None
        sh = self._shardings(self._param_shapes)
        n = next(iter(batch.values())).shape[0]
        dp = batch_parallelism(self.mesh)
        if n % (dp * self.accum_steps):
            raise ValueError(
                f"batch of {n} rows must divide evenly over {dp} data-parallel devices x "
                f"grad_accum={self.accum_steps}"
            )
        b_sh = {k: batch_sharding(self.mesh, np.ndim(v)) for k, v in batch.items()}
        rep = _replicated(self.mesh)
        if self.lora is None:  # (state, batch, rng)
            inner = self._step_fn

            def step_fn(state, b, rng):
                return inner(state, None, b, rng)

            in_sh: tuple = (sh, b_sh, rep)
        else:  # (state, base, batch, rng): the base is an input, never donated
            step_fn = self._step_fn
            in_sh = (sh, param_shardings(self.base, self.mesh), b_sh, rep)
        return jax.jit(step_fn, in_shardings=in_sh, out_shardings=(sh, rep), donate_argnums=(0,))

    def train_step(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """One optimizer update on a global batch; returns device metrics (not synced)."""
        if self.state is None:
            raise RuntimeError("Trainer has no params: call set_params() or restore() first")
        if self._jitted is None:
            self._jitted = self._compile(batch)
        batch = dict(batch)
        if jax.process_count() > 1:  # every process holds the global batch; place its shards
            batch = {k: global_batch(v, self.mesh) for k, v in batch.items()}
        rng = jax.random.fold_in(self.rng, self.step)
        if self.lora is None:
            self.state, metrics = self._jitted(self.state, batch, rng)
        else:
            self.state, metrics = self._jitted(self.state, self.base, batch, rng)
        self._step += 1
        return metrics

    def fit(
        self,
        loader: DataLoader,
        total_steps: int,
        eval_fn: Callable[[Trainer], Mapping[str, float]] | None = None,
        eval_every: int = 0,
        stop_after: int | None = None,
    ) -> dict[str, Any]:
        """Train until `total_steps` (or SIGTERM, or `stop_after` steps in this call).

        Checkpoints every `checkpoint_every` steps, at the end and on SIGTERM; returns a summary
        (final step, last metrics, tokens/s, whether preempted).
        """
        logger = MetricsLogger(
            self.out_dir, total_steps, self.step, self.tensorboard, self.progress
        )
        start = self.step
        last: dict[str, float] = {}
        evals: dict[str, float] = {}
        preempted = False
        tokens_since, t_since = 0, None
        tokens_total, t_total = 0, 0.0
        compile_s = None
        try:
            with PreemptionSync() as preempt:
                while self.step < total_steps:
                    if stop_after is not None and self.step - start >= stop_after:
                        break
                    batch = loader.next_batch()
                    n_tok = int(np.sum(np.asarray(batch[self.tokens_key]) > 0))
                    t0 = time.perf_counter()
                    metrics = self.train_step(batch)
                    if compile_s is None:  # first call: compile + run, measured apart
                        jax.block_until_ready(metrics)
                        compile_s = time.perf_counter() - t0
                        t_since = time.perf_counter()
                    else:
                        tokens_since += n_tok
                    self.ckpt.poll()
                    step = self.step
                    logger.advance()
                    if step % self.log_every == 0 or step == total_steps:
                        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                        now = time.perf_counter()
                        if tokens_since and t_since is not None:
                            dt = now - t_since
                            host["tokens_per_s"] = tokens_since / max(dt, 1e-9)
                            tokens_total += tokens_since
                            t_total += dt
                        tokens_since, t_since = 0, now
                        logger.log(step, host)
                        last = host
                    if eval_fn is not None and eval_every and step % eval_every == 0:
                        evals = dict(eval_fn(self))
                        logger.log(step, evals, prefix="eval/")
                        t_since = time.perf_counter()  # exclude eval time from tokens/s
                    if preempt.should_stop(step):  # collective: same answer on every process
                        log.warning("preemption notice: saving step %d and stopping", step)
                        self.save(loader)
                        preempted = True
                        break
                    if self.checkpoint_every and step % self.checkpoint_every == 0:
                        self.save(loader)
                if not preempted and self.step > start and self._saved_step != self.step:
                    self.save(loader)
                self.ckpt.wait()
        finally:
            logger.close()
        if eval_fn is not None and not preempted and self.step == total_steps and not evals:
            evals = dict(eval_fn(self))
        summary: dict[str, Any] = {
            "step": self.step,
            "total_steps": total_steps,
            "preempted": preempted,
            "last_metrics": last,
            "eval": evals,
            "tokens_per_s": tokens_total / t_total if t_total else None,
            "compile_s": compile_s,
            "out_dir": str(self.out_dir),
        }
        if os.environ.get(DIGEST_ENV):
            summary["params_digest"] = shard_digests(self.params)
        return summary

    def close(self) -> None:
        self.ckpt.close()

"""Run configuration: TOML files -> frozen dataclasses, with ``--set section.key=value`` overrides.

One ``RunConfig`` describes an SFT, GRPO or eval run; every field has a default, so
``load_config(None, [])`` is a valid (tiny, CPU) run. A TOML file sets any subset::

    [model]
    preset = "qwen3-8b"
    [grpo]
    group_size = 16

and overrides are parsed with the type of the field they set (``grpo.kl_beta=0.01`` is a
float, ``grpo.overlap=off`` a bool, ``data.train_paths=a.jsonl,b.jsonl`` a tuple of str,
``grpo.dual_clip=none`` clears an optional field). Unknown sections or keys and values of the
wrong type raise ``ConfigError`` naming the key (and the valid ones), so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Union

__all__ = [
    "ConfigError",
    "DataConfig",
    "EngineSection",
    "EnvsConfig",
    "GRPOConfig",
    "LoraConfig",
    "MeshConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SFTConfig",
    "TokenizerConfig",
    "TrainConfig",
    "load_config",
    "parse_override",
]


class ConfigError(ValueError):
    """A run configuration that cannot be used as written; the message names the key."""


DTYPES = ("float32", "bfloat16", "float16")


def _choice(section: str, key: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{section}.{key}={value!r}; choose one of {choices}")


def _check(section: str, key: str, ok: bool, what: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{section}.{key}={value!r}: must be {what}")


# ---------------------------------------------------------------------------- sections


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which Qwen3 to run and how to execute it."""

    SECTION: ClassVar[str] = "model"
    preset: str = "tiny"  # a Qwen3Config preset name (ignored when hf_dir is set)
    hf_dir: str | None = None  # a Hugging Face checkpoint directory: config + weights
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # master-weight dtype (float32 for bf16 mixed precision)
    remat: str = "none"  # rematerialisation policy, see jaxrepair.model.config.REMAT_POLICIES
    attention_impl: str = "auto"  # see jaxrepair.model.config.ATTENTION_IMPLS
    moe_impl: str = "auto"  # MoE grouped GEMMs, see jaxrepair.model.config.MOE_IMPLS
    scan_layers: bool | None = None  # unset = scanned on accelerators, unrolled on CPU

    def __post_init__(self) -> None:
        _choice("model", "dtype", self.dtype, DTYPES)
        _choice("model", "param_dtype", self.param_dtype, DTYPES)
        # The model package owns these names; imported here so the lists never drift.
        from jaxrepair.model.config import ATTENTION_IMPLS, MOE_IMPLS, PRESETS, REMAT_POLICIES

        _choice("model", "remat", self.remat, REMAT_POLICIES)
        _choice("model", "attention_impl", self.attention_impl, ATTENTION_IMPLS)
        _choice("model", "moe_impl", self.moe_impl, MOE_IMPLS)
        if self.hf_dir is None:
            _choice("model", "preset", self.preset, tuple(sorted(PRESETS)))


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes over the axes (data, fsdp, tensor); one of them may be -1 (the rest)."""

    SECTION: ClassVar[str] = "mesh"
    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    # The launch this config is sized for (what `jaxrepair plan --config` checks): the device
    # count and the memory per device in GiB. None = not stated.
    devices: int | None = None
    hbm_gib: float | None = None

    def __post_init__(self) -> None:
        for key in ("data", "fsdp", "tensor"):
            v = getattr(self, key)
            _check("mesh", key, v == -1 or v >= 1, "a positive size or -1", v)
        free = [k for k in ("data", "fsdp", "tensor") if getattr(self, k) == -1]
        if len(free) > 1:
            raise ConfigError(f"mesh: only one axis may be -1 (the rest), got {free} all -1")
        if self.devices is not None:
            _check("mesh", "devices", self.devices >= 1, ">= 1 or none", self.devices)
            self.resolve(self.devices)  # the axes must split the stated device count
        if self.hbm_gib is not None:
            _check("mesh", "hbm_gib", self.hbm_gib > 0, "> 0 or none", self.hbm_gib)

    def shape(self) -> dict[str, int]:
        """Axis sizes for ``jaxrepair.model.make_mesh``."""
        return {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}

    def resolve(self, num_devices: int) -> dict[str, int]:
        """Concrete sizes for ``num_devices`` devices (the -1 axis takes the rest)."""
        from jaxrepair.model.sharding import ShardingError, resolve_mesh_shape

        try:
            return resolve_mesh_shape(self.shape(), num_devices)
        except ShardingError as e:
            raise ConfigError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training data: trajectory JSONL files (SFT) and sequence layout."""

    SECTION: ClassVar[str] = "data"
    train_paths: tuple[str, ...] = ()
    eval_paths: tuple[str, ...] = ()
    seq_len: int = 1024
    batch_size: int = 8  # global rows per optimizer step (before grad accumulation split)
    packing: bool = True
    shuffle: bool = True

    def __post_init__(self) -> None:
        _check("data", "seq_len", self.seq_len >= 1, ">= 1", self.seq_len)
        _check("data", "batch_size", self.batch_size >= 1, ">= 1", self.batch_size)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup and a decay schedule; global-norm clipping; accumulation."""

    SECTION: ClassVar[str] = "optim"
    lr: float = 1e-5
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1  # the schedule's final lr as a fraction of lr
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # 0 = no clipping
    grad_accum: int = 1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _choice("optim", "schedule", self.schedule, ("cosine", "linear", "constant"))
        _check("optim", "lr", self.lr > 0, "> 0", self.lr)
        _check("optim", "warmup_steps", self.warmup_steps >= 0, ">= 0", self.warmup_steps)
        _check("optim", "min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]", self.min_lr_ratio)
        _check("optim", "weight_decay", self.weight_decay >= 0, ">= 0", self.weight_decay)
        _check("optim", "clip_norm", self.clip_norm >= 0, ">= 0", self.clip_norm)
        _check("optim", "grad_accum", self.grad_accum >= 1, ">= 1", self.grad_accum)
        _check("optim", "b1", 0 <= self.b1 < 1, "in [0, 1)", self.b1)
        _check("optim", "b2", 0 <= self.b2 < 1, "in [0, 1)", self.b2)
        _check("optim", "eps", self.eps > 0, "> 0", self.eps)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The loop: length, seed, logging, evaluation and checkpoint cadence."""

    SECTION: ClassVar[str] = "train"
    steps: int = 100
    seed: int = 0
    log_every: int = 1
    eval_every: int = 0  # 0 = no periodic evaluation
    out_dir: str = "runs/default"
    checkpoint_every: int = 100  # 0 = only at the end
    checkpoint_keep: int = 3
    resume: bool = True  # continue from the latest good checkpoint in out_dir if any
    # Initial weights when not resuming: an orbax run directory (e.g. the SFT run's out_dir,
    # for GRPO) or a Hugging Face checkpoint directory. None = model.hf_dir, else random init.
    init_from: str | None = None

    def __post_init__(self) -> None:
        _check("train", "steps", self.steps >= 0, ">= 0", self.steps)
        _check("train", "log_every", self.log_every >= 1, ">= 1", self.log_every)
        for key in ("eval_every", "checkpoint_every"):
            _check("train", key, getattr(self, key) >= 0, ">= 0", getattr(self, key))
        _check("train", "checkpoint_keep", self.checkpoint_keep >= 1, ">= 1", self.checkpoint_keep)
        _check("train", "out_dir", bool(self.out_dir), "a non-empty path", self.out_dir)


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning on expert trajectories."""

    SECTION: ClassVar[str] = "sft"
    thinking: str = "keep"  # keep or drop <think> blocks in assistant turns
    # loss weight of every non-assistant token (system, user, tool output: the code the model
    # reads); 0 = assistant tokens only. A small weight adds language modelling of the
    # repositories in the prompts (OpenAI's former fine-tuning "prompt_loss_weight").
    prompt_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        _choice("sft", "thinking", self.thinking, ("keep", "drop"))
        w = self.prompt_loss_weight
        _check("sft", "prompt_loss_weight", 0.0 <= w <= 1.0, "in [0, 1]", w)


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """GRPO: rollouts per task, the loss (see jaxrepair.train.grpo), sampling, pipeline."""

    SECTION: ClassVar[str] = "grpo"
    group_size: int = 8  # rollouts per task
    tasks_per_step: int = 4
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_beta: float = 0.0  # 0 = no reference model at all
    aggregation: str = "token"
    advantage_scale: str = "std"
    ratio_level: str = "token"  # "sequence" = GSPO
    dual_clip: float | None = None
    tis_cap: float | None = None  # truncated importance sampling cap (None = off)
    epochs_per_batch: int = 1
    minibatch_size: int | None = None  # rollouts per optimizer step; None = the whole batch
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    generate_batch: int = 64  # most sequences per generate call (longer queues wait a call)
    pipeline: str = "simplified"
    overlap: bool = True  # collect batch k+1 while training on batch k
    # most learner steps between the policy that sampled a token and the one that trains on
    # it; overlap needs 1 (batch k+1 is sampled by the weights before update k)
    max_staleness: int = 1
    # with overlap: the batch collected during update k takes the new weights once the update
    # ends (episodes in flight continue under them; every token records its version)
    partial_rollouts: bool = True
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal (DAPO)
    # with dynamic_sampling: collect rounds per step, each drawing new tasks for the groups
    # still missing, until tasks_per_step groups carry signal (1 = filter only, no refill)
    sampling_rounds: int = 4
    mask_truncated: bool = True  # mask out episodes cut by the step/context/time cap
    # A completion cut at max_new_tokens without a stop token: False = end the episode as
    # truncated (reward 0, masked when mask_truncated); True = send it to the env as written.
    submit_unfinished: bool = False
    tasks: tuple[str, ...] = ()  # train only on these task ids; empty = every train-split task
    # train.eval_every > 0: held-out avg@k / pass@k of the current policy every eval_every steps,
    # on the corpus's test split (eval_limit tasks spread over categories; None = all), with
    # eval_samples samples per task at the sampling temperature, in this run's pipeline
    eval_samples: int = 4
    eval_limit: int | None = None

    def __post_init__(self) -> None:
        from jaxrepair.train.grpo import ADVANTAGE_SCALES, AGGREGATIONS, RATIO_LEVELS

        _check(
            "grpo",
            "group_size",
            self.group_size >= 2,
            ">= 2 (advantages compare rollouts within a group)",
            self.group_size,
        )
        _check("grpo", "tasks_per_step", self.tasks_per_step >= 1, ">= 1", self.tasks_per_step)
        _check("grpo", "clip_low", 0 <= self.clip_low < 1, "in [0, 1)", self.clip_low)
        _check("grpo", "clip_high", self.clip_high >= 0, ">= 0", self.clip_high)
        _check("grpo", "kl_beta", self.kl_beta >= 0, ">= 0", self.kl_beta)
        _choice("grpo", "aggregation", self.aggregation, AGGREGATIONS)
        _choice("grpo", "advantage_scale", self.advantage_scale, ADVANTAGE_SCALES)
        _choice("grpo", "ratio_level", self.ratio_level, RATIO_LEVELS)
        if self.dual_clip is not None:
            _check("grpo", "dual_clip", self.dual_clip > 1, "> 1 or none", self.dual_clip)
        if self.tis_cap is not None:
            _check("grpo", "tis_cap", self.tis_cap > 0, "> 0 or none", self.tis_cap)
        _check(
            "grpo", "epochs_per_batch", self.epochs_per_batch >= 1, ">= 1", self.epochs_per_batch
        )
        batch = self.group_size * self.tasks_per_step
        if self.minibatch_size is not None:
            ok = self.minibatch_size >= 1 and batch % self.minibatch_size == 0
            _check(
                "grpo",
                "minibatch_size",
                ok,
                f"a divisor of group_size * tasks_per_step = {batch}, or none",
                self.minibatch_size,
            )
        _check("grpo", "max_new_tokens", self.max_new_tokens >= 1, ">= 1", self.max_new_tokens)
        _check("grpo", "temperature", self.temperature >= 0, ">= 0", self.temperature)
        _check("grpo", "top_p", 0 < self.top_p <= 1, "in (0, 1]", self.top_p)
        _check("grpo", "top_k", self.top_k >= 0, ">= 0 (0 = off)", self.top_k)
        _check("grpo", "sampling_rounds", self.sampling_rounds >= 1, ">= 1", self.sampling_rounds)
        _check("grpo", "generate_batch", self.generate_batch >= 1, ">= 1", self.generate_batch)
        _check("grpo", "max_staleness", self.max_staleness >= 0, ">= 0", self.max_staleness)
        _check("grpo", "eval_samples", self.eval_samples >= 1, ">= 1", self.eval_samples)
        if self.eval_limit is not None:
            _check("grpo", "eval_limit", self.eval_limit >= 1, ">= 1 or none", self.eval_limit)
        if self.overlap and self.max_staleness < 1:
            raise ConfigError(
                "grpo.overlap samples each batch with the weights before the previous update "
                "(staleness 1): set grpo.max_staleness >= 1 or grpo.overlap = false"
            )
        _choice("grpo", "pipeline", self.pipeline, ("simplified", "full"))
        dup = sorted({t for t in self.tasks if self.tasks.count(t) > 1})
        _check(
            "grpo", "tasks", not dup and all(self.tasks), "distinct non-empty task ids", self.tasks
        )


@dataclasses.dataclass(frozen=True)
class EnvsConfig:
    """The environment farm: sandbox backend, workers, task corpus, caps and timeouts."""

    SECTION: ClassVar[str] = "envs"
    sandbox: str = "local"
    workers: int = 4
    corpus: str | None = None  # task directory or SWE-bench style .jsonl; None = bundled
    build_timeout_s: float = 120.0
    episode_timeout_s: float = 900.0
    max_steps: int = 30  # full pipeline: step cap per episode
    max_context_tokens: int = 16384  # full pipeline: context cap per episode
    retries: int = 1  # infra failures retried before an episode is recorded as infra_error
    cache_validation: bool = True  # identical final workspaces are built once
    # chaos: hold every reset/step back a random 0..latency_jitter_s s (seeded per process);
    # results must not depend on it
    latency_jitter_s: float = 0.0
    # "local": worker processes on this host; "ray": Ray actors on the cluster at ray_address
    # (None: the cluster this process is connected to, else a new local one)
    backend: str = "local"
    ray_address: str | None = None
    max_concurrent_builds: int | None = None  # ray: jobs building at once, cluster-wide
    # ray: custom resources each worker actor reserves, "name=amount" (e.g. ["docker=1"] to
    # place builds only on nodes started with `ray start --resources='{"docker": 8}'`)
    ray_resources: tuple[str, ...] = ()
    # JAX processes that drive a farm: "primary" (process 0 drives the job's one farm),
    # "every_process" (each drives its own, episodes spread over them), "auto" (ray: primary,
    # local: every_process)
    drivers: str = "auto"

    def farm_drivers(self, processes: int) -> int:
        """How many of a job's `processes` drive a farm (processes 0..n-1)."""
        one = self.drivers == "primary" or (self.drivers == "auto" and self.backend == "ray")
        return 1 if one else processes

    @property
    def ray_resource_amounts(self) -> dict[str, float]:
        """`ray_resources` as Ray's {name: amount}."""
        return {k.strip(): float(v) for k, v in (r.split("=", 1) for r in self.ray_resources)}

    def __post_init__(self) -> None:
        _choice("envs", "sandbox", self.sandbox, ("local", "docker"))
        for r in self.ray_resources:
            name, _, amount = r.partition("=")
            try:
                ok = bool(name.strip()) and float(amount) > 0
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(
                    f"envs.ray_resources: {r!r} is not name=amount with an amount > 0 "
                    f'(e.g. "docker=1")'
                )
        _choice("envs", "backend", self.backend, ("local", "ray"))
        _choice("envs", "drivers", self.drivers, ("auto", "primary", "every_process"))
        if self.max_concurrent_builds is not None:
            _check(
                "envs",
                "max_concurrent_builds",
                self.max_concurrent_builds >= 1,
                ">= 1",
                self.max_concurrent_builds,
            )
        _check("envs", "workers", self.workers >= 1, ">= 1", self.workers)
        for key in ("build_timeout_s", "episode_timeout_s"):
            _check("envs", key, getattr(self, key) > 0, "> 0", getattr(self, key))
        _check("envs", "max_steps", self.max_steps >= 1, ">= 1", self.max_steps)
        _check(
            "envs",
            "max_context_tokens",
            self.max_context_tokens >= 1,
            ">= 1",
            self.max_context_tokens,
        )
        _check("envs", "retries", self.retries >= 0, ">= 0", self.retries)
        _check(
            "envs", "latency_jitter_s", self.latency_jitter_s >= 0, ">= 0", self.latency_jitter_s
        )


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """Tokenizer spec for ``jaxrepair.envs.tokenizer.load_tokenizer``."""

    SECTION: ClassVar[str] = "tokenizer"
    # "tiny"/"small" (BPE on our corpus), "qwen3" (offline Qwen vocab), or a checkpoint dir.
    # None = the hf_dir checkpoint's own tokenizer when model.hf_dir is set, else "tiny".
    spec: str | None = None


@dataclasses.dataclass(frozen=True)
class EngineSection:
    """The rollout engine that GRPO and eval generate with (`jaxrepair.engine`).

    Off: the static sampler generates on the learner's parameters and mesh. On: each process
    runs an engine on `tensor` of its own devices with its own copy of the weights (reshard
    after each update), a paged KV cache of `num_blocks` x `block_size` tokens reused across
    turns and within a group, and `slots` sequences decoded together.

    The one definition of the engine's sizes: `jaxrepair.engine.jax_engine.EngineConfig` is
    this section plus the longest sequence of a run (defined here so that reading a config
    never imports jax).
    """

    SECTION: ClassVar[str] = "engine"
    enabled: bool = True
    slots: int = 64
    block_size: int = 64  # tokens per KV block (bigger blocks: bigger decode GEMMs)
    num_blocks: int = 1024
    decode_chunk: int = 16
    prefill_chunk: int = 512
    dtype: str = "auto"  # auto: bfloat16 on accelerators, float32 on CPU
    tensor: int = 1  # devices of this process the engine's tensor parallelism spans

    def __post_init__(self) -> None:
        for name in ("slots", "block_size", "decode_chunk", "prefill_chunk", "tensor"):
            value = getattr(self, name)
            _check("engine", name, value >= 1, ">= 1", value)
        _check("engine", "num_blocks", self.num_blocks >= 2, ">= 2", self.num_blocks)
        _check(
            "engine",
            "prefill_chunk",
            self.prefill_chunk % self.block_size == 0,
            f"a multiple of engine.block_size ({self.block_size})",
            self.prefill_chunk,
        )
        _choice("engine", "dtype", self.dtype, ("auto", "float32", "bfloat16", "float16"))


LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """LoRA: train low-rank adapters W + (alpha / rank) A @ B on a frozen base
    (`jaxrepair.model.lora`). `targets` name the projections (q, k, v, o of attention;
    gate, up, down of the MLP, or of every expert in a MoE model).

    `dropout` drops input features of each A (one mask per step and layer, scaled by
    1 / (1 - dropout)) so the adapters can still be merged into the weights before the forward.
    Defined here, free of jax, so that reading a config never imports it.
    """

    SECTION: ClassVar[str] = "lora"
    enabled: bool = False
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        _check("lora", "rank", self.rank >= 1, ">= 1", self.rank)
        _check("lora", "alpha", self.alpha > 0, "> 0", self.alpha)
        _check("lora", "dropout", 0 <= self.dropout < 1, "in [0, 1)", self.dropout)
        _check("lora", "targets", bool(self.targets), "non-empty", self.targets)
        for t in self.targets:
            _choice("lora", "targets", t, LORA_TARGETS)
        _check(
            "lora", "targets", len(set(self.targets)) == len(self.targets), "unique", self.targets
        )

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "mesh": MeshConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "sft": SFTConfig,
    "grpo": GRPOConfig,
    "envs": EnvsConfig,
    "tokenizer": TokenizerConfig,
    "engine": EngineSection,
    "lora": LoraConfig,
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole run: one frozen dataclass per TOML section."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    sft: SFTConfig = dataclasses.field(default_factory=SFTConfig)
    grpo: GRPOConfig = dataclasses.field(default_factory=GRPOConfig)
    envs: EnvsConfig = dataclasses.field(default_factory=EnvsConfig)
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    engine: EngineSection = dataclasses.field(default_factory=EngineSection)
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (tuples as lists, None kept) for logging and JSON."""
        return {
            name: {
                f.name: _plain(getattr(getattr(self, name), f.name))
                for f in dataclasses.fields(getattr(self, name))
            }
            for name in SECTIONS
        }

    def to_toml(self) -> str:
        """TOML text that ``load_config`` reads back to an equal config (None fields omitted:
        every optional field defaults to None)."""
        import tomli_w

        d = {
            s: {k: v for k, v in sec.items() if v is not None} for s, sec in self.to_dict().items()
        }
        return tomli_w.dumps(d)

    def save(self, path: str | Path) -> None:
        """Write the resolved config (e.g. into the run's out_dir, for reproducibility)."""
        Path(path).write_text(self.to_toml())

    @property
    def tokenizer_spec(self) -> str:
        """The tokenizer to load: explicit spec, else the checkpoint's own, else "tiny"."""
        if self.tokenizer.spec is not None:
            return self.tokenizer.spec
        return self.model.hf_dir if self.model.hf_dir is not None else "tiny"

    def with_overrides(self, overrides: list[str]) -> RunConfig:
        """A copy with ``section.key=value`` overrides applied (validated as in load_config)."""
        data = self.to_dict()
        for item in overrides:
            section, key, raw = _split_override(item)
            data[section][key] = parse_override(f"{section}.{key}", raw, _field_type(section, key))
        return _build(data, source="overrides")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        """Build from a nested dict as read from TOML (sections may be missing)."""
        return _build(_check_tree(data, source), source=source)


# ---------------------------------------------------------------------------- typing


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _field_type(section: str, key: str) -> Any:
    if section not in SECTIONS:
        raise ConfigError(
            f"unknown config section {section!r}; valid sections: {', '.join(SECTIONS)}"
        )
    types_ = _field_types(SECTIONS[section])
    if key not in types_:
        raise ConfigError(
            f"unknown config key {section}.{key!r}; valid keys in [{section}]: {', '.join(types_)}"
        )
    return types_[key]


def _optional_inner(tp: Any) -> tuple[bool, Any]:
    """(is Optional, the non-None type)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != len(typing.get_args(tp)) and len(args) == 1:
            return True, args[0]
    return False, tp


def _type_name(tp: Any) -> str:
    optional, inner = _optional_inner(tp)
    if typing.get_origin(inner) is tuple:
        name = f"list of {typing.get_args(inner)[0].__name__}"
    else:
        name = inner.__name__
    return f"{name} or none" if optional else name


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check a TOML value against the field type (ints widen to float; nothing else)."""
    optional, inner = _optional_inner(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got none")
    if typing.get_origin(inner) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_describe(value)}")
        elem = typing.get_args(inner)[0]
        return tuple(_coerce(f"{key}[{i}]", v, elem) for i, v in enumerate(value))
    if inner is bool:
        ok = isinstance(value, bool)
    elif inner is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif inner is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif inner is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a field type this module does not support
        raise TypeError(f"{key}: unsupported field type {inner!r}")
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_override(key: str, raw: str, tp: Any) -> Any:
    """Parse the text of ``--set key=raw`` as the field type ``tp``."""
    optional, inner = _optional_inner(tp)
    text = raw.strip()
    if optional and text.lower() in ("none", "null"):
        return None
    if typing.get_origin(inner) is tuple:
        elem = typing.get_args(inner)[0]
        if text.startswith("["):
            try:
                items = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{key}: cannot parse {raw!r} as a TOML list ({e})") from None
            return _coerce(key, items, inner)
        parts = [p.strip() for p in text.split(",")] if text else []
        return tuple(parse_override(f"{key}[{i}]", p, elem) for i, p in enumerate(parts))
    if inner is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"{key}: expected bool (true/false/yes/no/on/off/1/0), got {raw!r}")
    if inner is int:
        try:
            return int(text, 10)
        except ValueError:
            raise ConfigError(f"{key}: expected int, got {raw!r}") from None
    if inner is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {raw!r}") from None
    if inner is str:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]
        return text
    raise TypeError(f"{key}: unsupported field type {inner!r}")  # pragma: no cover


# ---------------------------------------------------------------------------- building


def _split_override(item: str) -> tuple[str, str, str]:
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"override must look like section.key=value, got {item!r}")
    path, raw = item.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"override key must be section.key (e.g. grpo.group_size), got {path.strip()!r}"
        )
    return parts[0], parts[1], raw


def _check_tree(data: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Validate section/key names and value types of a nested dict (e.g. parsed TOML)."""
    out: dict[str, dict[str, Any]] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown config section {section!r}; "
                f"valid sections: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table, got {_describe(values)}")
        out[section] = {}
        for key, value in values.items():
            tp = _field_type(section, key)
            out[section][key] = _coerce(f"{section}.{key}", value, tp)
    return out


def _build(data: dict[str, dict[str, Any]], source: str) -> RunConfig:
    sections = {}
    for name, cls in SECTIONS.items():
        values = data.get(name, {})
        types_ = _field_types(cls)
        checked = {k: _coerce(f"{name}.{k}", v, types_[k]) for k, v in values.items()}
        try:
            sections[name] = cls(**checked)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    return RunConfig(**sections)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a TOML run config (None = all defaults) and apply ``section.key=value`` overrides.

    Overrides are applied after the file, in order (the last one wins), then every section is
    validated once, so an override can fix a value the file alone would reject.
    """
    data: dict[str, dict[str, Any]] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML: {e}") from None
        source = str(p)
        data = _check_tree(raw, source)
    for item in overrides:
        section, key, raw_value = _split_override(item)
        tp = _field_type(section, key)
        data.setdefault(section, {})[key] = parse_override(f"{section}.{key}", raw_value, tp)
    if overrides:
        source = f"{source} + overrides"
    return _build(data, source=source)

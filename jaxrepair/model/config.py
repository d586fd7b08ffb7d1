"""Qwen3 hyperparameters: every Hugging Face config field that changes the math, and presets."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

REMAT_POLICIES = ("none", "full", "save_dots")
# "auto" = "blocked" on CPU, "xla" on accelerators (jaxrepair.model.attention.resolve_impl)
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "splash", "blocked", "reference")
ROPE_TYPES = ("default", "linear", "yarn")
# MoE grouped GEMMs (jaxrepair.model.moe): "auto" = "tiled" on CPU, "ragged" elsewhere.
MOE_IMPLS = ("auto", "ragged", "tiled")


class ConfigError(ValueError):
    """A model configuration that jaxrepair cannot run exactly as Hugging Face would."""


@dataclasses.dataclass(frozen=True)
class Qwen3Config:
    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rope_theta: float = 1_000_000.0
    # Rope scaling as in HF `rope_parameters` minus rope_theta, e.g. {"rope_type": "yarn",
    # "factor": 4.0, "original_max_position_embeddings": 32768}. None = plain RoPE.
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 40960
    # Mixture of experts (Qwen3-MoE). 0 experts = dense.
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True
    # Special token ids carried over from the checkpoint (used by export and the sampler).
    bos_token_id: int | None = 151643
    eos_token_id: int | None = 151645
    # Execution choices (not part of the checkpoint math).
    remat: str = "none"
    attention_impl: str = "auto"
    moe_impl: str = "auto"
    # None = the backend's choice: scanned on accelerators, unrolled on CPU (qwen3.scans_layers)
    scan_layers: bool | None = None

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"Qwen3Config.{name} must be a positive int, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads} (GQA needs whole groups)"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"remat={self.remat!r}; choose one of {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(
                f"attention_impl={self.attention_impl!r}; choose one of {ATTENTION_IMPLS}"
            )
        if self.moe_impl not in MOE_IMPLS:
            raise ConfigError(f"moe_impl={self.moe_impl!r}; choose one of {MOE_IMPLS}")
        if self.scan_layers not in (True, False, None):
            raise ConfigError(f"scan_layers={self.scan_layers!r}; choose true, false or none")
        rope = self.rope_scaling_dict
        if rope is not None:
            kind = rope.get("rope_type", rope.get("type", "default"))
            if kind not in ROPE_TYPES:
                raise ConfigError(f"rope_type={kind!r} is not supported; supported: {ROPE_TYPES}")
            if kind in ("linear", "yarn") and "factor" not in rope:
                raise ConfigError(f"rope_scaling of type {kind!r} needs a 'factor'")
            if kind == "yarn" and "original_max_position_embeddings" not in rope:
                raise ConfigError(
                    "rope_scaling of type 'yarn' needs 'original_max_position_embeddings'"
                )

    # ------------------------------------------------------------------ derived
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return None if self.rope_scaling is None else dict(self.rope_scaling)

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def num_params(self) -> int:
        """Parameter count (embeddings included, tied head counted once)."""
        d, f, v, n = (
            self.hidden_size,
            self.intermediate_size,
            self.vocab_size,
            self.num_hidden_layers,
        )
        attn = d * self.q_size + 2 * d * self.kv_size + self.q_size * d + 2 * self.head_dim
        if self.is_moe:
            mlp = self.num_experts * 3 * d * self.moe_intermediate_size + d * self.num_experts
        else:
            mlp = 3 * d * f
        per_layer = attn + mlp + 2 * d
        head = 0 if self.tie_word_embeddings else d * v
        return v * d + n * per_layer + d + head

    def flops_per_token(self, seq_len: int) -> float:
        """Forward matmul FLOPs per token (2 per MAC), attention scores included (causal average)."""
        d, n = self.hidden_size, self.num_hidden_layers
        mlp_f = (
            self.moe_intermediate_size * self.num_experts_per_tok
            if self.is_moe
            else self.intermediate_size
        )
        proj = d * self.q_size + 2 * d * self.kv_size + self.q_size * d + 3 * d * mlp_f
        attn = 2 * self.q_size * seq_len / 2  # QK^T and AV, causal half on average
        return 2.0 * (n * (proj + attn) + d * self.vocab_size)

    def inv_freq(self) -> np.ndarray:
        """RoPE inverse frequencies, with linear or YaRN scaling as transformers computes them."""
        dim = self.head_dim
        base = self.rope_theta
        pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float32) / dim)
        inv = (1.0 / pos_freqs).astype(np.float32)
        rope = self.rope_scaling_dict
        kind = None if rope is None else rope.get("rope_type", rope.get("type", "default"))
        if kind == "linear":
            return (inv / rope["factor"]).astype(np.float32)
        if kind == "yarn":
            factor = rope["factor"]
            orig = rope["original_max_position_embeddings"]
            beta_fast = rope.get("beta_fast") or 32
            beta_slow = rope.get("beta_slow") or 1

            def corr_dim(rot: float) -> float:
                return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

            low, high = corr_dim(beta_fast), corr_dim(beta_slow)
            if rope.get("truncate", True):
                low, high = math.floor(low), math.ceil(high)
            low, high = max(low, 0), min(high, dim - 1)
            if low == high:
                high += 0.001
            ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
            extrap = 1 - ramp
            interp = 1.0 / (factor * pos_freqs)
            return (interp * (1 - extrap) + inv * extrap).astype(np.float32)
        return inv

    def rope_attention_scale(self) -> float:
        """cos/sin multiplier (YaRN's attention factor; 1 otherwise)."""
        rope = self.rope_scaling_dict
        if rope is None or rope.get("rope_type", rope.get("type")) != "yarn":
            return 1.0
        if rope.get("attention_factor") is not None:
            return float(rope["attention_factor"])
        factor = rope["factor"]
        mscale, mscale_all = rope.get("mscale"), rope.get("mscale_all_dim")

        def get_mscale(scale: float, m: float = 1.0) -> float:
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        if mscale and mscale_all:
            return float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all))
        return get_mscale(factor)

    def replace(self, **changes: Any) -> Qwen3Config:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Qwen3Config:
        """Published Qwen3 hyperparameters by name (see PRESETS)."""
        if name not in PRESETS:
            raise ConfigError(
                f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
            )
        return cls(**{**PRESETS[name], **overrides})

    # ------------------------------------------------------------------ HF I/O
    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config.json") -> Qwen3Config:
        """Read transformers' config.json, old (rope_theta/torch_dtype) and new (rope_parameters/dtype) forms."""
        model_type = raw.get("model_type")
        if model_type not in ("qwen3", "qwen3_moe"):
            raise ConfigError(
                f"{source}: model_type={model_type!r}; jaxrepair supports qwen3 and qwen3_moe"
            )
        act = raw.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{source}: hidden_act={act!r} is not supported (Qwen3 uses silu)")
        if raw.get("attention_bias", False):
            raise ConfigError(f"{source}: attention_bias=true is not supported (Qwen3 has none)")
        if raw.get("use_sliding_window", False):
            raise ConfigError(f"{source}: use_sliding_window=true is not supported")
        rope_params = dict(raw.get("rope_parameters") or {})
        legacy_scaling = raw.get("rope_scaling")
        if legacy_scaling:
            rope_params = {**legacy_scaling, **rope_params}
        theta = rope_params.pop("rope_theta", raw.get("rope_theta", 10000.0))
        kind = rope_params.get("rope_type", rope_params.get("type", "default"))
        scaling = None if kind == "default" else tuple(sorted(rope_params.items()))
        num_heads = raw["num_attention_heads"]
        fields: dict[str, Any] = dict(
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            intermediate_size=raw.get("intermediate_size", 0)
            or raw.get("moe_intermediate_size", 1),
            num_hidden_layers=raw["num_hidden_layers"],
            num_attention_heads=num_heads,
            num_key_value_heads=raw.get("num_key_value_heads", num_heads),
            head_dim=raw.get("head_dim") or raw["hidden_size"] // num_heads,
            rope_theta=float(theta),
            rope_scaling=scaling,
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 40960)),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_id=_first_id(raw.get("eos_token_id")),
        )
        if model_type == "qwen3_moe":
            if raw.get("mlp_only_layers") or raw.get("decoder_sparse_step", 1) != 1:
                raise ConfigError(f"{source}: mixed dense/sparse layers are not supported")
            experts = raw.get("num_experts", raw.get("num_local_experts"))
            if experts is None:
                raise ConfigError(f"{source}: qwen3_moe without num_experts / num_local_experts")
            fields.update(
                num_experts=int(experts),  # transformers 5.x writes num_local_experts
                num_experts_per_tok=raw["num_experts_per_tok"],
                moe_intermediate_size=raw["moe_intermediate_size"],
                norm_topk_prob=bool(raw.get("norm_topk_prob", True)),
            )
        try:
            return cls(**fields)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> Qwen3Config:
        cfg_path = Path(path) / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"no config.json in {path}")
        return cls.from_hf_dict(json.loads(cfg_path.read_text()), source=str(cfg_path))

    def to_hf_dict(self, dtype: str = "bfloat16") -> dict[str, Any]:
        """config.json in the format transformers writes today (rope_parameters, dtype)."""
        rope = {"rope_theta": self.rope_theta, "rope_type": "default"}
        if self.rope_scaling is not None:
            rope.update(self.rope_scaling_dict)
        out: dict[str, Any] = {
            "architectures": ["Qwen3MoeForCausalLM" if self.is_moe else "Qwen3ForCausalLM"],
            "model_type": "qwen3_moe" if self.is_moe else "qwen3",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "use_sliding_window": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "dtype": dtype,
            "torch_dtype": dtype,
        }
        if self.is_moe:
            out.update(
                num_experts=self.num_experts,
                num_local_experts=self.num_experts,  # the name transformers 5.x reads
                num_experts_per_tok=self.num_experts_per_tok,
                moe_intermediate_size=self.moe_intermediate_size,
                norm_topk_prob=self.norm_topk_prob,
                decoder_sparse_step=1,
                mlp_only_layers=[],
            )
        return out


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        return value[0] if value else None
    return value


_QWEN3_COMMON = dict(vocab_size=151936, rope_theta=1_000_000.0, rms_norm_eps=1e-6, head_dim=128)

# Published hyperparameters (Qwen/Qwen3-*/config.json).
_TINY: dict[str, Any] = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    max_position_embeddings=4096,
)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _TINY,
    # tiny with every MLP a Qwen3-MoE block (4 experts, top 2): MoE code paths in seconds
    "tiny-moe": dict(_TINY, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64),
    # Small enough to train on a laptop CPU in minutes, sized for the tiny BPE tokenizer
    # (4096 ids): what `jaxrepair demo` trains.
    "toy": dict(
        vocab_size=4096,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
    ),
    "qwen3-0.6b": dict(
        _QWEN3_COMMON,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        max_position_embeddings=40960,
    ),
    "qwen3-1.7b": dict(
        _QWEN3_COMMON,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        max_position_embeddings=40960,
    ),
    "qwen3-4b": dict(
        _QWEN3_COMMON,
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        max_position_embeddings=40960,
    ),
    "qwen3-8b": dict(
        _QWEN3_COMMON,
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
        max_position_embeddings=40960,
    ),
    "qwen3-14b": dict(
        _QWEN3_COMMON,
        hidden_size=5120,
        intermediate_size=17408,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=8,
        tie_word_embeddings=False,
        max_position_embeddings=40960,
    ),
    "qwen3-32b": dict(
        _QWEN3_COMMON,
        hidden_size=5120,
        intermediate_size=25600,
        num_hidden_layers=64,
        num_attention_heads=64,
        num_key_value_heads=8,
        tie_word_embeddings=False,
        max_position_embeddings=40960,
    ),
    "qwen3-30b-a3b": dict(
        _QWEN3_COMMON,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=48,
        num_attention_heads=32,
        num_key_value_heads=4,
        tie_word_embeddings=False,
        max_position_embeddings=40960,
        num_experts=128,
        num_experts_per_tok=8,
        moe_intermediate_size=768,
    ),
}

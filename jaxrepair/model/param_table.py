"""The one table of Qwen3's parameters: shape, sharding axes and Hugging Face name of each.

`qwen3.param_shapes`, the sharding rules (`sharding.PARAM_AXES`) and the safetensors
import/export (`hf`) all read this table, so a parameter is described once.

Shapes are written with symbolic dimensions (L layers, D hidden, N query heads, K kv heads,
H head dim, F MLP width, V vocabulary, E experts, M expert MLP width). Layer parameters are
stacked on a leading L axis (and MoE experts on an E axis after it); projections are stored
[in, out] with the head axes explicit, so tensor parallelism splits whole heads.

`kind` says how our layout relates to the HF tensor (HF stores linear weights [out, in]):
"copy" (same layout), "t_out" (HF [O, I] -> ours [I, *O split]), "t_in" (HF [O, I] -> ours
[*I split, O]).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from jaxrepair.model.config import Qwen3Config

Kind = Literal["copy", "t_out", "t_in"]
When = Literal["always", "dense", "moe", "untied"]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter. `path` is "name" or "layers/name"; `hf` has {i} (layer) and {e}
    (expert) placeholders where it is per layer / per expert."""

    path: str
    dims: tuple[str, ...]
    axes: tuple[str, ...]
    hf: str
    kind: Kind
    when: When = "always"

    @property
    def layer(self) -> bool:
        return self.path.startswith("layers/")

    @property
    def expert(self) -> bool:
        return "{e}" in self.hf

    @property
    def ours(self) -> str:
        """The parameter's name inside its dict (params[...] or params["layers"][...])."""
        return self.path.rsplit("/", 1)[-1]

    def shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] for d in self.dims)


_L = "model.layers.{i}."
PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("embed", ("V", "D"), ("vocab", "embed"), "model.embed_tokens.weight", "copy"),
    ParamSpec("final_norm", ("D",), ("norm",), "model.norm.weight", "copy"),
    ParamSpec("lm_head", ("D", "V"), ("embed", "vocab"), "lm_head.weight", "t_out", "untied"),
    ParamSpec(
        "layers/attn_norm", ("L", "D"), ("layers", "norm"), _L + "input_layernorm.weight", "copy"
    ),
    ParamSpec(
        "layers/q_proj",
        ("L", "D", "N", "H"),
        ("layers", "embed", "heads", "head_dim"),
        _L + "self_attn.q_proj.weight",
        "t_out",
    ),
    ParamSpec(
        "layers/k_proj",
        ("L", "D", "K", "H"),
        ("layers", "embed", "kv_heads", "head_dim"),
        _L + "self_attn.k_proj.weight",
        "t_out",
    ),
    ParamSpec(
        "layers/v_proj",
        ("L", "D", "K", "H"),
        ("layers", "embed", "kv_heads", "head_dim"),
        _L + "self_attn.v_proj.weight",
        "t_out",
    ),
    ParamSpec(
        "layers/o_proj",
        ("L", "N", "H", "D"),
        ("layers", "heads", "head_dim", "embed"),
        _L + "self_attn.o_proj.weight",
        "t_in",
    ),
    ParamSpec(
        "layers/q_norm", ("L", "H"), ("layers", "norm"), _L + "self_attn.q_norm.weight", "copy"
    ),
    ParamSpec(
        "layers/k_norm", ("L", "H"), ("layers", "norm"), _L + "self_attn.k_norm.weight", "copy"
    ),
    ParamSpec(
        "layers/mlp_norm",
        ("L", "D"),
        ("layers", "norm"),
        _L + "post_attention_layernorm.weight",
        "copy",
    ),
    ParamSpec(
        "layers/gate_proj",
        ("L", "D", "F"),
        ("layers", "embed", "mlp"),
        _L + "mlp.gate_proj.weight",
        "t_out",
        "dense",
    ),
    ParamSpec(
        "layers/up_proj",
        ("L", "D", "F"),
        ("layers", "embed", "mlp"),
        _L + "mlp.up_proj.weight",
        "t_out",
        "dense",
    ),
    ParamSpec(
        "layers/down_proj",
        ("L", "F", "D"),
        ("layers", "mlp", "embed"),
        _L + "mlp.down_proj.weight",
        "t_in",
        "dense",
    ),
    ParamSpec(
        "layers/router",
        ("L", "D", "E"),
        ("layers", "embed", "experts"),
        _L + "mlp.gate.weight",
        "t_out",
        "moe",
    ),
    ParamSpec(
        "layers/experts_gate",
        ("L", "E", "D", "M"),
        ("layers", "experts", "embed", "mlp"),
        _L + "mlp.experts.{e}.gate_proj.weight",
        "t_out",
        "moe",
    ),
    ParamSpec(
        "layers/experts_up",
        ("L", "E", "D", "M"),
        ("layers", "experts", "embed", "mlp"),
        _L + "mlp.experts.{e}.up_proj.weight",
        "t_out",
        "moe",
    ),
    ParamSpec(
        "layers/experts_down",
        ("L", "E", "M", "D"),
        ("layers", "experts", "mlp", "embed"),
        _L + "mlp.experts.{e}.down_proj.weight",
        "t_in",
        "moe",
    ),
)


def dim_sizes(cfg: Qwen3Config) -> dict[str, int]:
    sizes = {
        "L": cfg.num_hidden_layers,
        "D": cfg.hidden_size,
        "N": cfg.num_attention_heads,
        "K": cfg.num_key_value_heads,
        "H": cfg.head_dim,
        "F": cfg.intermediate_size,
        "V": cfg.vocab_size,
    }
    if cfg.is_moe:
        sizes.update(E=cfg.num_experts, M=cfg.moe_intermediate_size)
    return sizes


def params_of(cfg: Qwen3Config) -> list[ParamSpec]:
    """The parameters a model of this config has, in table order."""
    present = {
        "always": True,
        "dense": not cfg.is_moe,
        "moe": cfg.is_moe,
        "untied": not cfg.tie_word_embeddings,
    }
    return [p for p in PARAMS if present[p.when]]

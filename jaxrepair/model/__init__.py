"""Pure-JAX Qwen3: config, forward, sharding, Hugging Face import/export, sampler."""

from jaxrepair.model.config import PRESETS, ConfigError, Qwen3Config
from jaxrepair.model.hf import CheckpointMismatch, load_hf, save_hf
from jaxrepair.model.qwen3 import forward, init_params, param_shapes
from jaxrepair.model.sharding import ShardingError, make_mesh

__all__ = [
    "PRESETS",
    "CheckpointMismatch",
    "ConfigError",
    "Qwen3Config",
    "ShardingError",
    "forward",
    "init_params",
    "load_hf",
    "make_mesh",
    "param_shapes",
    "save_hf",
]

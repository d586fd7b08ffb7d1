"""Hugging Face safetensors import/export. The name mapping lives here and only here.

Import reads tensor slices straight into each device's shard (`jax.make_array_from_callback` +
safetensors `get_slice`), so a 32B checkpoint never needs a full copy in host memory: at most
one layer's slice of one tensor is on the host at a time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.qwen3 import Params, param_shapes
from jaxrepair.model.sharding import check_mesh_fits, gather_to_host, param_shardings

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)
SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"


class CheckpointMismatch(ValueError):
    """The checkpoint does not fit the config (missing, unexpected or wrongly shaped tensor)."""


@dataclasses.dataclass(frozen=True)
class _Map:
    """One of our params <-> HF tensors (per layer when `layer` is True).

    kind: "copy" (same layout), "t_out" (HF [O, I] -> ours [I, *O split]),
    "t_in" (HF [O, I] -> ours [*I split, O]). `expert`: one HF tensor per expert (Qwen3-MoE
    saves experts that way), stacked on our axis after the layer axis.
    """

    ours: str
    hf: str
    kind: str
    layer: bool
    expert: bool = False


_LAYER_MAPS = (
    _Map("attn_norm", "model.layers.{i}.input_layernorm.weight", "copy", True),
    _Map("q_proj", "model.layers.{i}.self_attn.q_proj.weight", "t_out", True),
    _Map("k_proj", "model.layers.{i}.self_attn.k_proj.weight", "t_out", True),
    _Map("v_proj", "model.layers.{i}.self_attn.v_proj.weight", "t_out", True),
    _Map("o_proj", "model.layers.{i}.self_attn.o_proj.weight", "t_in", True),
    _Map("q_norm", "model.layers.{i}.self_attn.q_norm.weight", "copy", True),
    _Map("k_norm", "model.layers.{i}.self_attn.k_norm.weight", "copy", True),
    _Map("mlp_norm", "model.layers.{i}.post_attention_layernorm.weight", "copy", True),
)
_DENSE_MLP_MAPS = (
    _Map("gate_proj", "model.layers.{i}.mlp.gate_proj.weight", "t_out", True),
    _Map("up_proj", "model.layers.{i}.mlp.up_proj.weight", "t_out", True),
    _Map("down_proj", "model.layers.{i}.mlp.down_proj.weight", "t_in", True),
)
_MOE_MAPS = (
    _Map("router", "model.layers.{i}.mlp.gate.weight", "t_out", True),
    _Map("experts_gate", "model.layers.{i}.mlp.experts.{e}.gate_proj.weight", "t_out", True, True),
    _Map("experts_up", "model.layers.{i}.mlp.experts.{e}.up_proj.weight", "t_out", True, True),
    _Map("experts_down", "model.layers.{i}.mlp.experts.{e}.down_proj.weight", "t_in", True, True),
)
_TOP_MAPS = (
    _Map("embed", "model.embed_tokens.weight", "copy", False),
    _Map("final_norm", "model.norm.weight", "copy", False),
    _Map("lm_head", "lm_head.weight", "t_out", False),
)


def _maps(cfg: Qwen3Config) -> list[_Map]:
    tops = [m for m in _TOP_MAPS if not (m.ours == "lm_head" and cfg.tie_word_embeddings)]
    return tops + list(_LAYER_MAPS) + list(_MOE_MAPS if cfg.is_moe else _DENSE_MLP_MAPS)


def _instances(m: _Map, cfg: Qwen3Config) -> Iterator[tuple[str, int, int]]:
    """(HF tensor name, layer, expert) of every HF tensor behind one of our params."""
    layers = range(cfg.num_hidden_layers) if m.layer else [0]
    experts = range(cfg.num_experts) if m.expert else [0]
    for i in layers:
        for e in experts:
            yield m.hf.format(i=i, e=e), i, e


def _per_tensor_shape(m: _Map, full: tuple[int, ...]) -> tuple[int, ...]:
    return full[int(m.layer) + int(m.expert) :]


def _hf_shape(kind: str, ours_shape: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "copy":
        return ours_shape
    if kind == "t_out":
        return (math.prod(ours_shape[1:]), ours_shape[0])
    return (ours_shape[-1], math.prod(ours_shape[:-1]))


def hf_tensor_names(cfg: Qwen3Config) -> list[str]:
    """All tensor names a Qwen3 checkpoint of this config holds."""
    return [name for m in _maps(cfg) for name, _, _ in _instances(m, cfg)]


# ----------------------------------------------------------------------------- reading
class _SafetensorsDir:
    """Lazy access to tensors of a safetensors checkpoint, single file or sharded with index."""

    def __init__(self, path: Path):
        self.path = path
        index = path / SAFE_INDEX
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
        elif (path / SAFE_SINGLE).is_file():
            with safe_open(path / SAFE_SINGLE, framework="numpy") as f:
                weight_map = {k: SAFE_SINGLE for k in f.keys()}
        else:
            raise FileNotFoundError(f"no {SAFE_SINGLE} or {SAFE_INDEX} in {path}")
        self.weight_map: dict[str, str] = weight_map
        self._handles: dict[str, Any] = {}

    def _file(self, name: str):
        fname = self.weight_map[name]
        if fname not in self._handles:
            self._handles[fname] = safe_open(self.path / fname, framework="numpy")
        return self._handles[fname]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._file(name).get_slice(name).get_shape())

    def read(self, name: str, rows: slice | None = None, cols: slice | None = None) -> np.ndarray:
        sl = self._file(name).get_slice(name)
        if rows is None and cols is None:
            return sl[:]
        if len(sl.get_shape()) == 1:
            return sl[rows]
        return sl[rows or slice(None), cols or slice(None)]


def _bounds(s: slice, n: int) -> tuple[int, int]:
    start, stop, step = s.indices(n)
    if step != 1:
        raise ValueError("strided shards are not supported")
    return start, stop


def _read_block(
    src: _SafetensorsDir, name: str, kind: str, ours_shape: tuple[int, ...], idx: tuple[slice, ...]
) -> np.ndarray:
    """Read exactly the block `idx` of our per-layer tensor from HF tensor `name`."""
    if kind == "copy":
        if len(ours_shape) == 1:
            return src.read(name, idx[0])
        return src.read(name, idx[0], idx[1])
    if kind == "t_out":  # ours [I, O1, O2...]
        i_slice, split = idx[0], idx[1:]
        rest = math.prod(ours_shape[2:])
        a, b = _bounds(split[0], ours_shape[1])
        block = src.read(name, slice(a * rest, b * rest), i_slice).T
        block = block.reshape(block.shape[0], b - a, *ours_shape[2:])
        return block[(slice(None), slice(None), *split[1:])]
    # "t_in": ours [I1, I2..., O]
    split, o_slice = idx[:-1], idx[-1]
    rest = math.prod(ours_shape[1:-1])
    a, b = _bounds(split[0], ours_shape[0])
    block = src.read(name, o_slice, slice(a * rest, b * rest)).T
    block = block.reshape(b - a, *ours_shape[1:-1], block.shape[-1])
    return block[(slice(None), *split[1:], slice(None))]


def _check_checkpoint(src: _SafetensorsDir, cfg: Qwen3Config, shapes: Params) -> None:
    expected: dict[str, tuple[int, ...]] = {}
    for m in _maps(cfg):
        full = shapes["layers"][m.ours].shape if m.layer else shapes[m.ours].shape
        per = _per_tensor_shape(m, full)
        for name, _, _ in _instances(m, cfg):
            expected[name] = _hf_shape(m.kind, per)
    present = set(src.weight_map)
    missing = sorted(set(expected) - present)
    if missing:
        raise CheckpointMismatch(
            f"{src.path}: checkpoint lacks tensor {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    tied_extra = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    unknown = sorted(present - set(expected) - tied_extra)
    if unknown:
        raise CheckpointMismatch(
            f"{src.path}: unknown tensor {unknown[0]!r} for this Qwen3 config"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
        )
    for name, shape in expected.items():
        got = src.shape(name)
        if got != shape:
            raise CheckpointMismatch(
                f"{src.path}: tensor {name!r} has shape {list(got)}, expected {list(shape)} "
                f"from config.json"
            )


def load_hf(
    hf_dir: str | Path, mesh: Mesh | None = None, dtype=jnp.bfloat16
) -> tuple[Qwen3Config, Params]:
    """Load a transformers `save_pretrained` directory into (config, params) on the mesh."""
    path = Path(hf_dir)
    cfg = Qwen3Config.from_hf_dir(path)
    shapes = param_shapes(cfg, dtype)
    src = _SafetensorsDir(path)
    _check_checkpoint(src, cfg, shapes)
    if mesh is None:
        mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
        shardings = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), shapes)
    else:
        check_mesh_fits(cfg, mesh)
        shardings = param_shardings(shapes, mesh)
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == jnp.bfloat16 else np.dtype(dtype)

    def make(m: _Map, sds, sharding) -> jax.Array:
        per_shape = _per_tensor_shape(m, sds.shape)
        lead = int(m.layer) + int(m.expert)

        def callback(index: tuple[slice, ...]) -> np.ndarray:
            if not m.layer:
                return _read_block(src, m.hf, m.kind, per_shape, index).astype(np_dtype)
            ranges = [range(*_bounds(index[a], sds.shape[a])) for a in range(lead)]

            def read(i: int, e: int = 0) -> np.ndarray:
                name = m.hf.format(i=i, e=e)
                return _read_block(src, name, m.kind, per_shape, index[lead:]).astype(np_dtype)

            if not m.expert:
                return np.stack([read(i) for i in ranges[0]])
            return np.stack([np.stack([read(i, e) for e in ranges[1]]) for i in ranges[0]])

        return jax.make_array_from_callback(sds.shape, sharding, callback)

    params: Params = {"layers": {}}
    for m in _maps(cfg):
        if m.layer:
            params["layers"][m.ours] = make(
                m, shapes["layers"][m.ours], shardings["layers"][m.ours]
            )
        else:
            params[m.ours] = make(m, shapes[m.ours], shardings[m.ours])
    return cfg, params


# ----------------------------------------------------------------------------- writing
def _to_hf(kind: str, block: np.ndarray) -> np.ndarray:
    if kind == "copy":
        return block
    if kind == "t_out":
        return np.ascontiguousarray(block.reshape(block.shape[0], -1).T)
    return np.ascontiguousarray(block.reshape(-1, block.shape[-1]).T)


def _hf_tensors(cfg: Qwen3Config, params: Params, np_dtype) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, array) one tensor at a time (one layer slice on the host at a time)."""
    for m in _maps(cfg):
        if not m.layer:
            yield m.hf, _to_hf(m.kind, gather_to_host(params[m.ours]).astype(np_dtype))
            continue
        stacked = params["layers"][m.ours]
        layer = None
        for name, i, e in _instances(m, cfg):
            if not m.expert:
                yield name, _to_hf(m.kind, gather_to_host(stacked[i]).astype(np_dtype))
                continue
            if e == 0:  # one layer of all experts on the host at a time
                layer = gather_to_host(stacked[i]).astype(np_dtype)
            yield name, _to_hf(m.kind, layer[e])


def save_hf(
    out_dir: str | Path,
    cfg: Qwen3Config,
    params: Params,
    *,
    dtype: str = "bfloat16",
    max_shard_bytes: int = 5 * 1024**3,
    tokenizer_from: str | Path | None = None,
) -> Path:
    """Write a directory that `transformers.AutoModelForCausalLM.from_pretrained` loads.

    config.json, generation_config.json, model-0000x-of-0000y.safetensors + index, and the
    tokenizer files of `tokenizer_from` when given. In multi-host runs every process must call
    it (the gathers are collective) and only process 0 writes.
    """
    out = Path(out_dir)
    np_dtype = {
        "bfloat16": np.dtype(ml_dtypes.bfloat16),
        "float32": np.float32,
        "float16": np.float16,
    }
    if dtype not in np_dtype:
        raise ValueError(f"dtype must be one of {sorted(np_dtype)}, got {dtype!r}")
    writer = jax.process_index() == 0
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    tmp_names: list[str] = []

    def flush() -> None:
        if writer and shards[-1]:
            name = f"shard-{len(tmp_names):05d}.tmp"
            save_file(shards[-1], str(out / name), metadata={"format": "pt"})
            tmp_names.append(name)
        shards[-1] = {}

    weight_map: dict[str, int] = {}
    total_bytes = 0
    for name, arr in _hf_tensors(cfg, params, np_dtype[dtype]):
        if size and size + arr.nbytes > max_shard_bytes:
            flush()
            size = 0
        shards[-1][name] = arr
        weight_map[name] = len(tmp_names)
        size += arr.nbytes
        total_bytes += arr.nbytes
    flush()
    if not writer:
        return out
    n = len(tmp_names)
    final = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    for tmp, fin in zip(tmp_names, final, strict=True):
        (out / tmp).replace(out / fin)
    index = {
        "metadata": {"total_size": total_bytes},
        "weight_map": {k: final[v] for k, v in sorted(weight_map.items())},
    }
    (out / SAFE_INDEX).write_text(json.dumps(index, indent=2))
    (out / "config.json").write_text(json.dumps(cfg.to_hf_dict(dtype), indent=2))
    gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    if tokenizer_from is not None:
        for fname in TOKENIZER_FILES:
            src = Path(tokenizer_from) / fname
            if src.is_file():
                shutil.copy2(src, out / fname)
    return out

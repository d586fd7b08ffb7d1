"""Hugging Face safetensors import/export, streamed. The name mapping lives here and only here.

Neither direction ever holds the whole model on one device or in host memory:

* import (`load_hf`) reads, for every device, only the block of each tensor that device holds
  (safetensors `get_slice`) and puts it straight onto that device; the host holds one device's
  block of one parameter at a time;
* export (`save_hf`) takes one layer of one parameter at a time off the (sharded) devices, casts
  it on device, gathers it to the host and appends its bytes to a safetensors file whose header
  was planned up front; the host holds one tensor (one layer of all experts for MoE) at a time.

Export writes into a staging directory beside the target and moves the files in only once all
of them are written, so a failed export leaves the target as it was. A non-empty target is
refused unless `replace=True`, which removes the old weights, config, generation config and
tokenizer files first: transformers must never load an old `model.safetensors` beside new
shards. In multi-process runs every process calls these functions (gathers are collectives);
only process 0 writes, and a failure on any process is raised on all of them.
"""

from __future__ import annotations

import builtins
import functools
import json
import logging
import math
import os
import shutil
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding
from safetensors import safe_open

from jaxrepair import multihost
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.param_table import ParamSpec, params_of
from jaxrepair.model.qwen3 import Params, param_shapes
from jaxrepair.model.sharding import check_mesh_fits, gather_to_host, param_shardings

log = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)
GENERATION_CONFIG = "generation_config.json"
SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
# What a model directory's weights and description are made of: `replace=True` removes these
# (and only these) before the new files move in.
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
MODEL_FILES = ("config.json", GENERATION_CONFIG, "adapter_config.json", *TOKENIZER_FILES)
EXPORT_DTYPES: dict[str, np.dtype] = {
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
}
_SAFETENSORS_DTYPE = {"bfloat16": "BF16", "float32": "F32", "float16": "F16"}


class CheckpointMismatch(ValueError):
    """The checkpoint does not fit the config (missing, unexpected or wrongly shaped tensor)."""


def _maps(cfg: Qwen3Config) -> list[ParamSpec]:
    return params_of(cfg)


def _instances(m: ParamSpec, cfg: Qwen3Config) -> Iterator[tuple[str, int, int]]:
    """(HF tensor name, layer, expert) of every HF tensor behind one of our params."""
    layers = range(cfg.num_hidden_layers) if m.layer else [0]
    experts = range(cfg.num_experts) if m.expert else [0]
    for i in layers:
        for e in experts:
            yield m.hf.format(i=i, e=e), i, e


def _per_tensor_shape(m: ParamSpec, full: tuple[int, ...]) -> tuple[int, ...]:
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


def export_dtype(name: str) -> np.dtype:
    """The numpy dtype of an export dtype name (bfloat16, float32, float16)."""
    if name not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(EXPORT_DTYPES)}, got {name!r}")
    return EXPORT_DTYPES[name]


def agree(error: BaseException | None) -> None:
    """Raise on every process when any process failed (the local error where there is one).

    A collective in multi-process runs: all processes call it at the same point, so a check that
    fails on one process cannot leave the others waiting in the next collective.
    """
    if jax.process_count() == 1:
        if error is not None:
            raise error
        return
    kind = None if error is None else _builtin_base(error).__name__
    every = multihost.allgather_objects(None if error is None else (kind, f"{error}"))
    if error is not None:
        raise error
    for p, got in enumerate(every):
        if got is not None:  # the same kind of error (a user error stays one), named
            raise getattr(builtins, got[0], RuntimeError)(f"process {p}: {got[1]}")


def _builtin_base(e: BaseException) -> type:
    return next(c for c in type(e).__mro__ if c.__module__ == "builtins")


# ----------------------------------------------------------------------------- reading
class _SafetensorsDir:
    """Lazy access to tensors of a safetensors checkpoint, single file or sharded with index."""

    def __init__(self, path: Path):
        self.path = path
        index = path / SAFE_INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{index} is not a safetensors index: {e}") from None
            for fname in sorted(set(weight_map.values())):
                if not (path / fname).is_file():
                    raise FileNotFoundError(f"{index} lists {fname}, which is missing")
        elif (path / SAFE_SINGLE).is_file():
            with safe_open(path / SAFE_SINGLE, framework="numpy") as f:
                weight_map = {k: SAFE_SINGLE for k in f.keys()}
        else:
            found = sorted(p.name for p in path.glob("*.bin"))
            hint = (
                f" (found {found[0]}: convert PyTorch .bin weights to safetensors)" if found else ""
            )
            raise FileNotFoundError(f"no {SAFE_SINGLE} or {SAFE_INDEX} in {path}{hint}")
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


def _open_hf_dir(hf_dir: str | Path) -> tuple[Qwen3Config, _SafetensorsDir]:
    path = Path(hf_dir)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise FileNotFoundError(f"Hugging Face model directory {hf_dir} {what}")
    cfg = Qwen3Config.from_hf_dir(path)
    src = _SafetensorsDir(path)
    _check_checkpoint(src, cfg, param_shapes(cfg))
    return cfg, src


def check_hf_dir(hf_dir: str | Path) -> Qwen3Config:
    """The config of a Hugging Face Qwen3 directory whose tensors all match it (reads only
    config.json and the safetensors headers): a cheap check before anything is created."""
    return _open_hf_dir(hf_dir)[0]


def place_blocks(
    shape: tuple[int, ...],
    sharding: Sharding,
    read: Callable[[tuple[slice, ...]], np.ndarray],
) -> jax.Array:
    """A global array built from `read(index)` blocks, each put straight onto its device(s).

    Only this process's devices are filled; a block shared by several devices (replication) is
    read once. The host holds one block at a time and no device ever receives more than its
    own shard.
    """
    by_index: dict[tuple[tuple[int, int], ...], list[jax.Device]] = {}
    for dev, idx in sharding.addressable_devices_indices_map(shape).items():
        key = tuple(_bounds(s, n) for s, n in zip(idx, shape, strict=True))
        by_index.setdefault(key, []).append(dev)
    placed: dict[jax.Device, jax.Array] = {}
    for key, devices in by_index.items():
        block = read(tuple(slice(a, b) for a, b in key))
        for dev in devices:
            placed[dev] = jax.device_put(block, dev)
        del block
    order = list(sharding.addressable_devices_indices_map(shape))
    return jax.make_array_from_single_device_arrays(shape, sharding, [placed[d] for d in order])


def load_hf(
    hf_dir: str | Path, mesh: Mesh | None = None, dtype=jnp.bfloat16
) -> tuple[Qwen3Config, Params]:
    """Load a transformers `save_pretrained` directory into (config, params) on the mesh.

    Streams: every device gets only its own block of each tensor, read from the file by slice
    (see `place_blocks`). Without a mesh everything goes to the first device.
    """
    cfg, src = _open_hf_dir(hf_dir)
    shapes = param_shapes(cfg, dtype)
    if mesh is None:
        mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
        shardings = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), shapes)
    else:
        check_mesh_fits(cfg, mesh)
        shardings = param_shardings(shapes, mesh)
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == jnp.bfloat16 else np.dtype(dtype)

    def make(m: ParamSpec, sds, sharding) -> jax.Array:
        per_shape = _per_tensor_shape(m, sds.shape)
        lead = int(m.layer) + int(m.expert)

        def read(index: tuple[slice, ...]) -> np.ndarray:
            if not m.layer:
                return _read_block(src, m.hf, m.kind, per_shape, index).astype(np_dtype)
            out = np.empty(tuple(s.stop - s.start for s in index), np_dtype)  # concrete bounds
            layers = range(*_bounds(index[0], sds.shape[0]))
            experts = range(*_bounds(index[1], sds.shape[1])) if m.expert else range(1)
            for j, i in enumerate(layers):
                for k, e in enumerate(experts):
                    name = m.hf.format(i=i, e=e)
                    block = _read_block(src, name, m.kind, per_shape, index[lead:])
                    out[(j, k) if m.expert else j] = block
            return out

        return place_blocks(sds.shape, sharding, read)

    params: Params = {"layers": {}}
    for m in _maps(cfg):
        if m.layer:
            params["layers"][m.ours] = make(
                m, shapes["layers"][m.ours], shardings["layers"][m.ours]
            )
        else:
            params[m.ours] = make(m, shapes[m.ours], shardings[m.ours])
    return cfg, params


# ----------------------------------------------------------------------------- target directory
def _listing(directory: Path, limit: int = 3) -> str:
    names = sorted(p.name for p in directory.iterdir())
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_out_dir(out: Path, replace: bool) -> None:
    """Refuse an export target that would mix old and new files.

    A missing or empty directory is fine; a non-empty one only with `replace` (which removes
    the old model files first). Raises FileExistsError naming what is in the way.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"export target {out} exists and is not a directory")
    if replace or not any(out.iterdir()):
        return
    raise FileExistsError(
        f"export target {out} is not empty (holds {_listing(out)}); export into a new "
        "directory, or pass --replace to replace the model in it"
    )


def stale_model_files(out: Path) -> list[Path]:
    """The files of `out` that a new export replaces: weights (safetensors, PyTorch .bin, their
    indexes), config, generation config and tokenizer files. Anything else is kept."""
    found = {p for pattern in WEIGHT_PATTERNS for p in out.glob(pattern)}
    found |= {out / n for n in MODEL_FILES if (out / n).exists()}
    return sorted(p for p in found if p.is_file() or p.is_symlink())


def _staging_dir(out: Path) -> Path:
    """A fresh directory beside `out` (same file system, so the final moves are renames)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()  # default mode (respects umask), like any directory the user makes
    return staging


def _commit(staging: Path, out: Path, replace: bool) -> None:
    """Move the staged files into `out`; with `replace`, remove its old model files first."""
    if not out.exists():
        staging.rename(out)
        return
    if replace:
        for p in stale_model_files(out):
            log.info("removing %s (replaced by the export)", p)
            p.unlink()
    for f in sorted(staging.iterdir()):
        os.replace(f, out / f.name)
    staging.rmdir()


# ----------------------------------------------------------------------------- generation config
def _token_name(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _in_vocab(ids: list[int], vocab_size: int, what: str, source: str) -> list[int]:
    kept = [i for i in ids if isinstance(i, int) and 0 <= i < vocab_size]
    if len(kept) != len(ids):
        log.warning(
            "%s: dropping %s %s outside the %d-id vocabulary",
            source,
            what,
            [i for i in ids if i not in kept],
            vocab_size,
        )
    return kept


def generation_config_from_ids(
    vocab_size: int,
    eos: list[int],
    bos: int | None = None,
    pad: int | None = None,
    source: str = "model config",
) -> dict[str, Any]:
    """generation_config.json for greedy decoding that stops at every `eos` id (ids outside
    the vocabulary, which generate() could never produce, are dropped with a warning)."""
    eos = list(dict.fromkeys(_in_vocab(eos, vocab_size, "eos ids", source)))
    bos_l = _in_vocab([] if bos is None else [bos], vocab_size, "bos id", source)
    pad_l = _in_vocab([] if pad is None else [pad], vocab_size, "pad id", source)
    gen: dict[str, Any] = {}
    if bos_l:
        gen["bos_token_id"] = bos_l[0]
    if eos:
        gen["eos_token_id"] = eos if len(eos) > 1 else eos[0]
    if pad_l:
        gen["pad_token_id"] = pad_l[0]
    gen["do_sample"] = False
    return gen


def generation_config_from_tokenizer(tok_dir: Path, vocab_size: int) -> dict[str, Any] | None:
    """generation_config.json from a tokenizer's real stop tokens, as Qwen3 publishes it.

    eos: the tokenizer's eos_token (Qwen3 chat: <|im_end|>) and <|endoftext|>; pad and bos:
    the tokenizer's pad token (<|endoftext|>). None without a tokenizer.json.
    """
    tj = tok_dir / "tokenizer.json"
    if not tj.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(tj))
    except Exception as e:  # noqa: BLE001 - e.g. written by a newer `tokenizers`
        log.warning("cannot read %s (%s): generation config from the model config instead", tj, e)
        return None
    tc: dict[str, Any] = {}
    if (tok_dir / "tokenizer_config.json").is_file():
        try:
            tc = json.loads((tok_dir / "tokenizer_config.json").read_text())
        except ValueError as e:
            raise ValueError(f"{tok_dir / 'tokenizer_config.json'} is not valid JSON: {e}") from e
    eos_name = _token_name(tc.get("eos_token")) or "<|im_end|>"
    pad_name = _token_name(tc.get("pad_token")) or "<|endoftext|>"
    bos_name = _token_name(tc.get("bos_token")) or pad_name
    eos = [tok.token_to_id(n) for n in (eos_name, "<|endoftext|>")]
    return generation_config_from_ids(
        vocab_size,
        [i for i in eos if i is not None],
        bos=tok.token_to_id(bos_name),
        pad=tok.token_to_id(pad_name),
        source=str(tj),
    )


def resolve_generation_config(
    cfg: Qwen3Config, tokenizer_from: Path | None, given: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The generation config an export writes: `given`; else the one stored beside the
    tokenizer (carried over from the imported model); else built from the tokenizer's stop
    tokens; else from the model config's ids (only those inside the vocabulary)."""
    if given is not None:
        return dict(given)
    if tokenizer_from is not None:
        carried = tokenizer_from / GENERATION_CONFIG
        if carried.is_file():
            try:
                gen = json.loads(carried.read_text())
            except ValueError as e:
                raise ValueError(f"{carried} is not valid JSON: {e}") from e
            eos = gen.get("eos_token_id")
            eos_l = eos if isinstance(eos, list) else ([] if eos is None else [eos])
            _in_vocab(eos_l, cfg.vocab_size, "eos ids", str(carried))  # warn only: theirs
            return gen
        built = generation_config_from_tokenizer(tokenizer_from, cfg.vocab_size)
        if built is not None:
            return built
    eos = [] if cfg.eos_token_id is None else [cfg.eos_token_id]
    return generation_config_from_ids(cfg.vocab_size, eos, bos=cfg.bos_token_id)


def _hf_config(cfg: Qwen3Config, dtype: str, gen: Mapping[str, Any]) -> dict[str, Any]:
    """config.json, its bos/eos ids agreeing with the generation config (first eos id)."""
    out = cfg.to_hf_dict(dtype)
    for key in ("bos_token_id", "eos_token_id"):  # ids the model can never emit: none
        if not (isinstance(out[key], int) and 0 <= out[key] < cfg.vocab_size):
            out[key] = None
    eos = gen.get("eos_token_id")
    if eos is not None and eos != []:
        out["eos_token_id"] = eos[0] if isinstance(eos, list) else eos
    for key in ("bos_token_id", "pad_token_id"):
        if gen.get(key) is not None:
            out[key] = gen[key]
    return out


# ----------------------------------------------------------------------------- writing
def _to_hf(kind: str, block: np.ndarray) -> np.ndarray:
    if kind == "copy":
        return block
    if kind == "t_out":
        return np.ascontiguousarray(block.reshape(block.shape[0], -1).T)
    return np.ascontiguousarray(block.reshape(-1, block.shape[-1]).T)


@functools.partial(jax.jit, static_argnums=2)
def _take_layer(stacked: jax.Array, i: jax.Array, dtype: Any) -> jax.Array:
    """Layer `i` of a stacked parameter, cast on device (it stays sharded like its source)."""
    return jax.lax.dynamic_index_in_dim(stacked, i, 0, keepdims=False).astype(dtype)


def _hf_tensors(cfg: Qwen3Config, params: Params, dtype: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, host array) one tensor at a time: one layer slice (one layer of all experts
    for MoE) is gathered to the host at a time, never a whole stacked parameter."""
    jdt = jnp.dtype(EXPORT_DTYPES[dtype])
    for m in _maps(cfg):
        if not m.layer:
            x = params[m.ours]
            yield m.hf, _to_hf(m.kind, gather_to_host(x if x.dtype == jdt else x.astype(jdt)))
            continue
        stacked = params["layers"][m.ours]
        layer = None
        for name, i, e in _instances(m, cfg):
            if not m.expert:
                yield name, _to_hf(m.kind, gather_to_host(_take_layer(stacked, i, jdt)))
                continue
            if e == 0:
                layer = gather_to_host(_take_layer(stacked, i, jdt))
            yield name, _to_hf(m.kind, layer[e])
        del layer


def _tensor_plan(cfg: Qwen3Config) -> list[tuple[str, tuple[int, ...]]]:
    """(name, HF shape) of every tensor, in the order `_hf_tensors` yields them."""
    shapes = param_shapes(cfg)
    plan = []
    for m in _maps(cfg):
        full = shapes["layers"][m.ours].shape if m.layer else shapes[m.ours].shape
        hf_shape = _hf_shape(m.kind, _per_tensor_shape(m, full))
        plan.extend((name, hf_shape) for name, _, _ in _instances(m, cfg))
    return plan


def _shard_plan(
    plan: list[tuple[str, tuple[int, ...]]], itemsize: int, max_shard_bytes: int
) -> list[list[tuple[str, tuple[int, ...]]]]:
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in plan:
        n = math.prod(shape) * itemsize
        if size and size + n > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += n
    return shards


class _SafetensorsWriter:
    """One safetensors file written tensor by tensor: the header (names, shapes, offsets) is
    known up front, so each tensor's bytes are appended as soon as it arrives."""

    def __init__(self, path: Path, entries: list[tuple[str, tuple[int, ...]]], dtype: str):
        self.path, self.entries, self.dtype = path, entries, dtype
        itemsize = EXPORT_DTYPES[dtype].itemsize
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape in entries:
            n = math.prod(shape) * itemsize
            header[name] = {
                "dtype": _SAFETENSORS_DTYPE[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + n],
            }
            offset += n
        self.nbytes = offset
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as safetensors writes it
        self._f: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(struct.pack("<Q", len(blob)))
        self._f.write(blob)
        self._next = 0

    def write(self, name: str, arr: np.ndarray) -> None:
        want_name, want_shape = self.entries[self._next]
        if (name, tuple(arr.shape)) != (want_name, want_shape) or arr.dtype != EXPORT_DTYPES[
            self.dtype
        ]:
            raise RuntimeError(
                f"{self.path.name}: got {name} {list(arr.shape)} {arr.dtype}, planned "
                f"{want_name} {list(want_shape)} {self.dtype}"
            )
        self._f.write(memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8)))
        self._next += 1

    @property
    def full(self) -> bool:
        return self._next == len(self.entries)

    def close(self) -> None:
        self._f.close()


def save_hf(
    out_dir: str | Path,
    cfg: Qwen3Config,
    params: Params,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 1024**3,
    tokenizer_from: str | Path | None = None,
    generation_config: Mapping[str, Any] | None = None,
    replace: bool = False,
) -> Path:
    """Write a directory that `transformers.AutoModelForCausalLM.from_pretrained` loads.

    config.json, generation_config.json (see `resolve_generation_config`),
    model-0000x-of-0000y.safetensors + index, and the tokenizer files of `tokenizer_from`.
    `dtype` defaults to the parameters' own dtype (no silent rounding). A non-empty `out_dir`
    is refused unless `replace` (its old weights, config and tokenizer files are removed,
    other files kept). Files appear only once every one is written. Multi-process: every
    process calls it (the gathers are collectives); process 0 writes.
    """
    out = Path(out_dir).absolute()
    if dtype is None:
        dtype = jnp.dtype(params["embed"].dtype).name
    np_dtype = export_dtype(dtype)
    writer = multihost.is_primary()
    single = jax.process_count() == 1
    error: BaseException | None = None
    tok_dir = None if tokenizer_from is None else Path(tokenizer_from)
    gen: dict[str, Any] = {}
    if writer:
        try:
            check_out_dir(out, replace)
            gen = resolve_generation_config(cfg, tok_dir, generation_config)
        except (OSError, ValueError) as e:
            error = e
    agree(error)

    plan = _tensor_plan(cfg)
    shards = _shard_plan(plan, np_dtype.itemsize, max_shard_bytes)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    files = _ExportFiles(out, shards, names, dtype, replace) if writer else None

    def guarded(step: Callable[[], None]) -> None:
        """Run a writing step; on failure drop the staged files. One process: raise now;
        several: remember the error, keep taking part in the gathers, raise on all below."""
        nonlocal error
        assert files is not None
        try:
            step()
        except Exception as e:  # noqa: BLE001 - reported on every process by agree()
            files.abort()
            if single:
                raise
            error = e

    try:
        if files is not None:
            guarded(files.start)
        for name, arr in _hf_tensors(cfg, params, dtype):  # collectives: every process
            if files is not None and error is None:
                guarded(functools.partial(files.add, name, arr))
            del arr
        if files is not None and error is None:
            extra = {
                "config.json": json.dumps(_hf_config(cfg, dtype, gen), indent=2),
                GENERATION_CONFIG: json.dumps(gen, indent=2),
            }
            guarded(functools.partial(files.finish, extra, tok_dir))
    except BaseException:
        if files is not None:
            files.abort()
        raise
    agree(error)
    return out


class _ExportFiles:
    """Process 0's side of an export: shard files staged beside the target, then moved in."""

    def __init__(
        self,
        out: Path,
        shards: list[list[tuple[str, tuple[int, ...]]]],
        names: list[str],
        dtype: str,
        replace: bool,
    ):
        self.out, self.shards, self.names, self.dtype, self.replace = (
            out,
            shards,
            names,
            dtype,
            replace,
        )
        self.staging: Path | None = None
        self.current: _SafetensorsWriter | None = None
        self.k = 0
        self.weight_map: dict[str, str] = {}
        self.total = 0

    def start(self) -> None:
        self.staging = _staging_dir(self.out)

    def add(self, name: str, arr: np.ndarray) -> None:
        assert self.staging is not None
        if self.current is None:
            path = self.staging / self.names[self.k]
            self.current = _SafetensorsWriter(path, self.shards[self.k], self.dtype)
        self.current.write(name, arr)
        self.weight_map[name] = self.names[self.k]
        if self.current.full:
            self.total += self.current.nbytes
            self.current.close()
            self.current, self.k = None, self.k + 1

    def finish(self, texts: Mapping[str, str], tok_dir: Path | None) -> None:
        assert self.staging is not None and self.current is None
        index = {
            "metadata": {"total_size": self.total},
            "weight_map": dict(sorted(self.weight_map.items())),
        }
        (self.staging / SAFE_INDEX).write_text(json.dumps(index, indent=2))
        for fname, text in texts.items():
            (self.staging / fname).write_text(text)
        if tok_dir is not None:
            for fname in TOKENIZER_FILES:
                if (tok_dir / fname).is_file():
                    shutil.copyfile(tok_dir / fname, self.staging / fname)
        _commit(self.staging, self.out, self.replace)
        self.staging = None

    def abort(self) -> None:
        """Close and delete whatever was staged (the target is untouched)."""
        if self.current is not None:
            self.current.close()
            self.current = None
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None


# ----------------------------------------------------------------------------- PEFT adapters
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def peft_tensors(cfg: Qwen3Config, lora: Any, adapters: Params) -> Iterator[tuple[str, np.ndarray]]:
    """(PEFT name, float32 array) of every adapter matrix: ours A [L, *in, r] and B
    [L, r, *out] per layer are PEFT's lora_A [r, in] and lora_B [out, r] of the HF module
    (so lora_B @ lora_A is the HF-layout [out, in] update)."""
    from jaxrepair.model.lora import target_specs

    for p in target_specs(cfg, lora):
        if p.expert:
            raise ValueError(
                "PEFT export of MoE expert adapters is not supported (transformers stores the "
                "experts fused); export merged weights, or target only q, k, v, o"
            )
        ab = adapters["layers"][p.ours]
        a = np.asarray(gather_to_host(ab["a"]), np.float32)
        b = np.asarray(gather_to_host(ab["b"]), np.float32)
        module = p.hf.removesuffix(".weight")
        for i in range(cfg.num_hidden_layers):
            prefix = "base_model.model." + module.format(i=i)
            r = a.shape[-1]
            yield prefix + ".lora_A.weight", np.ascontiguousarray(a[i].reshape(-1, r).T)
            yield prefix + ".lora_B.weight", np.ascontiguousarray(b[i].reshape(r, -1).T)


def save_peft_adapter(
    out_dir: str | Path,
    cfg: Qwen3Config,
    lora: Any,
    adapters: Params,
    base_model: str | None,
    *,
    replace: bool = False,
) -> Path:
    """Write a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors)
    that `peft.PeftModel.from_pretrained(transformers_base, out_dir)` loads. Multi-process:
    every process calls it (gathers); process 0 writes."""
    from safetensors.numpy import save_file

    from jaxrepair.model.lora import target_specs

    out = Path(out_dir).absolute()
    error: BaseException | None = None
    if multihost.is_primary():
        try:
            check_out_dir(out, replace)
        except OSError as e:
            error = e
    agree(error)
    tensors = dict(peft_tensors(cfg, lora, adapters))
    if not multihost.is_primary():
        return out
    modules = sorted(
        {p.hf.removesuffix(".weight").rsplit(".", 1)[-1] for p in target_specs(cfg, lora)}
    )
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
    staging = _staging_dir(out)
    try:
        save_file(tensors, str(staging / PEFT_WEIGHTS), metadata={"format": "pt"})
        (staging / PEFT_CONFIG).write_text(json.dumps(config, indent=2))
        _commit(staging, out, replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out

"""Training checkpoints (orbax) that resume exactly, and conversion to/from Hugging Face.

One checkpoint step directory holds three orbax items:

    params/     the model parameters (sharded arrays; restored straight into their shardings)
    opt_state/  the optax state (absent in a params-only checkpoint, e.g. from `import_hf`)
    meta/       JSON: step, RNG key data, data-loader position, the model config, run info

Saves are asynchronous (orbax writes in a background thread while training continues). When a
save has finished, `Checkpointer` writes its own commit marker `jaxrepair_commit.json` into the
step directory, listing every file with its size. On restore, the newest step whose marker
exists and whose files are all present with the recorded sizes (and that orbax can read) is
used; a step that fails any check is logged with the reason and moved to `quarantine/` so the
run can save that step number again. A process killed mid-save therefore resumes from the last
checkpoint that was completely written.

Several processes (one per host): every process writes its own shards and orbax's background
commit waits at a barrier for all of them before process 0 finalizes the step (renames it
from its temporary name), so process 0 writes the commit marker once its own
`wait_until_finished` returns: every process's data is on storage by then. Only process 0
decides which step to restore (verifies markers, quarantines bad steps) and broadcasts it; the
others take it, so all processes restore the same step. Directories may be local paths or
storage URIs (`gs://...`, see `jaxrepair.train.storage.run_path`).

Preemption: `PreemptionSync.should_stop(step)` is the same on every process; a SIGTERM to any
one process stops all of them at the same step (JAX's preemption sync point when the
distributed runtime is up, a per-process signal flag otherwise).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jaxrepair import multihost
from jaxrepair.model.config import Qwen3Config
from jaxrepair.multihost import is_primary
from jaxrepair.train.storage import is_uri, run_path

log = logging.getLogger(__name__)

COMMIT_MARKER = "jaxrepair_commit.json"
QUARANTINE = "quarantine"
TOKENIZER_SUBDIR = "tokenizer"


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was required, or a checkpoint that cannot be read."""


# ----------------------------------------------------------------------------- model config
def config_to_json(cfg: Qwen3Config) -> dict[str, Any]:
    """The model config as plain JSON (kept in every checkpoint so export needs nothing else)."""
    d = dataclasses.asdict(cfg)
    if d.get("rope_scaling") is not None:
        d["rope_scaling"] = [list(kv) for kv in d["rope_scaling"]]
    return d


def config_from_json(d: Mapping[str, Any]) -> Qwen3Config:
    d = dict(d)
    if d.get("rope_scaling") is not None:
        d["rope_scaling"] = tuple(tuple(kv) for kv in d["rope_scaling"])
    known = {f.name for f in dataclasses.fields(Qwen3Config)}
    return Qwen3Config(**{k: v for k, v in d.items() if k in known})


def rng_to_json(key: jax.Array) -> list[int]:
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.asarray(jax.device_get(data)).astype(np.uint32).ravel().tolist()


def rng_from_json(data: list[int]) -> jax.Array:
    return jax.random.wrap_key_data(np.asarray(data, dtype=np.uint32))


# ----------------------------------------------------------------------------- manifest
def _manifest(step_dir: epath.Path) -> dict[str, int]:
    files = {}
    if not is_uri(step_dir):
        for root, _, names in os.walk(step_dir):
            for n in names:
                p = Path(root) / n
                rel = str(p.relative_to(step_dir))
                if rel != COMMIT_MARKER:
                    files[rel] = p.stat().st_size
        return files
    for root, _, names in step_dir.walk():
        for n in names:
            p = root / n
            rel = str(p.relative_to(step_dir))
            if rel != COMMIT_MARKER:
                files[rel] = p.stat().length
    return files


def _size(p: epath.Path) -> int:
    st = p.stat()
    return st.st_size if hasattr(st, "st_size") else st.length


def verify_step_dir(step_dir: str | os.PathLike) -> str | None:
    """None when the step directory is complete; otherwise the reason it is not."""
    step_dir = run_path(step_dir)
    marker = step_dir / COMMIT_MARKER
    if not marker.is_file():
        return f"no commit marker {COMMIT_MARKER} (save did not finish)"
    try:
        recorded = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable commit marker: {e}"
    for rel, size in recorded.items():
        p = step_dir / rel
        if not p.is_file():
            return f"file {rel} is missing"
        got = _size(p)
        if got != size:
            return f"file {rel} has {got} bytes, {size} were written"
    return None


# ----------------------------------------------------------------------------- preemption
class PreemptionFlag:
    """Context manager: SIGTERM (and optionally SIGINT) set a flag instead of killing us.

    The training loop checks `flag.is_set()` after every step, saves a checkpoint and returns.
    Outside the main thread (where handlers cannot be installed) it is a plain flag.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.signals = signals
        self._event = threading.Event()
        self._old: dict[int, Any] = {}
        self.signum: int | None = None

    def _handler(self, signum, frame) -> None:
        self.signum = signum
        self._event.set()

    def __enter__(self) -> PreemptionFlag:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def _jax_preemption_sync() -> Any | None:
    """JAX's preemption sync manager when the distributed runtime (and its service) is up."""
    from jax._src import distributed

    if distributed.global_state.client is None:
        return None
    return distributed.global_state.preemption_sync_manager


class PreemptionSync:
    """Context manager: one stop decision for all processes when any of them gets SIGTERM.

        with PreemptionSync() as preempt:
            while ...:
                train_step(...)
                if preempt.should_stop(step):   # every process, once per step, same order
                    save(); break

    Under `jax.distributed` with its preemption service (the default), JAX's own SIGTERM
    notifier tells the coordination service, and `multihost_utils.reached_preemption_sync_point`
    returns True at the same step on every process (the first step after all processes have
    heard; typically within a second). Python signal handlers are then left alone: installing
    one would replace JAX's notifier. Without the service, SIGTERM sets a per-process flag and
    `should_stop` ORs it over processes with `process_allgather` (a small collective per step).
    A single process uses the flag alone (no collective).
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self._flag = PreemptionFlag(signals)
        self._sync = _jax_preemption_sync()
        self.stopped_at: int | None = None

    @property
    def mode(self) -> str:
        """ "jax" (preemption sync point), "allgather" or "local"."""
        if self._sync is not None:
            return "jax"
        return "allgather" if jax.process_count() > 1 else "local"

    @property
    def signum(self) -> int | None:
        return self._flag.signum

    def __enter__(self) -> PreemptionSync:
        if self.mode != "jax":
            self._flag.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._flag.__exit__(*exc)

    def set(self) -> None:
        """Ask to stop on this process, as a signal would ("local"/"allgather" modes; under
        JAX's preemption service send the process SIGTERM instead)."""
        self._flag.set()

    def should_stop(self, step: int) -> bool:
        """True on every process at the same `step` once any process was signalled.

        A collective: every process calls it exactly once per step, with the same steps.
        """
        mode = self.mode
        if mode == "jax":
            from jax.experimental import multihost_utils

            stop = bool(multihost_utils.reached_preemption_sync_point(int(step)))
        elif mode == "allgather":
            stop = multihost.any_process(self._flag.is_set())
        else:
            stop = self._flag.is_set()
        if stop:
            self.stopped_at = int(step)
        return stop


# ----------------------------------------------------------------------------- manager
@dataclasses.dataclass
class Restored:
    step: int
    params: Any
    opt_state: Any | None
    meta: dict[str, Any]


class Checkpointer:
    """orbax CheckpointManager + commit markers + fallback to the last good step.

    Multi-process: every process constructs it and calls save/restore/latest_good_step in the
    same order (they hold collectives); process 0 writes markers and quarantines.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        keep: int | None = 3,
        async_save: bool = True,
        read_only: bool = False,
    ):
        """`read_only` (export, inspection, possibly while a run is writing): bad steps are
        skipped and logged but never moved, and nothing is written."""
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = run_path(directory)
        self.keep = keep
        self.read_only = read_only
        self._is_writer = is_primary() and not read_only
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoint directory at {self.directory}")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=not read_only,
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
        )
        self.mngr = ocp.CheckpointManager(self.directory, options=options)
        self._pending: list[int] = []
        self._bad: set[int] = set()  # unusable steps left in place (read-only)

    # ------------------------------------------------------------------ saving
    def save(self, step: int, params: Any, opt_state: Any | None, meta: Mapping[str, Any]) -> None:
        """Start an asynchronous save of `step` (returns once arrays are copied off device)."""
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read-only")
        self.wait()  # the previous save: commit it before starting another
        items: dict[str, Any] = {
            "params": ocp.args.StandardSave(params),
            "meta": ocp.args.JsonSave({**dict(meta), "step": int(step)}),
        }
        if opt_state is not None:
            items["opt_state"] = ocp.args.StandardSave(opt_state)
        self.mngr.save(int(step), args=ocp.args.Composite(**items), force=True)
        self._pending.append(int(step))

    def poll(self) -> None:
        """Commit finished saves without blocking (call it once per training step).

        Processes may commit at different steps: waiting holds no collective (orbax's own
        barriers run in its background thread).
        """
        if self._pending and not self.mngr.is_saving_in_progress():
            self.wait()

    def wait(self) -> None:
        """Block until pending saves are on storage, then (process 0) write commit markers.

        orbax's background commit waits at a barrier for every process's writes, then process
        0 finalizes; process 0's wait_until_finished returns after that, so its markers only
        ever cover steps whose every shard is written.
        """
        if not self._pending:
            return
        self.mngr.wait_until_finished()
        self.mngr.check_for_errors()
        if self._is_writer:
            for step in self._pending:
                step_dir = self.directory / str(step)
                if step_dir.is_dir():  # may already be gone under keep-last-N
                    body = {"step": step, "time": time.time(), "files": _manifest(step_dir)}
                    tmp = step_dir / (COMMIT_MARKER + ".tmp")
                    tmp.write_text(json.dumps(body))
                    tmp.replace(step_dir / COMMIT_MARKER)
        self._pending.clear()

    def close(self) -> None:
        self.wait()
        self.mngr.close()

    # ------------------------------------------------------------------ reading
    def steps(self) -> list[int]:
        self.mngr.reload()
        return sorted(self.mngr.all_steps())

    def _quarantine(self, step: int, reason: str) -> None:
        """Process 0 (writer): move the step aside; read-only: remember to skip it."""
        if not is_primary():
            return
        log.warning("checkpoint step %d in %s is unusable: %s", step, self.directory, reason)
        if not self._is_writer:
            self._bad.add(step)
            return
        dest = self.directory / QUARANTINE / f"{step}-{int(time.time() * 1000)}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self.directory / str(step)
        if is_uri(src):
            src.rename(dest)
        else:
            shutil.move(str(src), str(dest))
        (dest / "REASON.txt").write_text(reason + "\n")
        log.warning("moved it to %s", dest)

    def _local_latest_good_step(self) -> int | None:
        for step in reversed(self.steps()):
            if step in self._bad:
                continue
            reason = verify_step_dir(self.directory / str(step))
            if reason is None:
                return step
            self._quarantine(step, reason)
        return None

    def latest_good_step(self) -> int | None:
        """Newest step that passes the commit/manifest check (bad ones are quarantined, or
        only skipped when read-only). Process 0 decides and every process gets its answer (a
        collective in multi-process runs)."""
        step = self._local_latest_good_step() if is_primary() else None
        if jax.process_count() > 1:
            step = multihost.broadcast_object(step)
            self.mngr.reload()  # see process 0's quarantine moves
        return step

    def _restore_agreed(self, step: int, items: dict[str, Any]) -> tuple[Any, str | None]:
        """orbax restore of `step` on every process; the error (if any process failed) is
        agreed, so all processes fall back together."""
        out, error = None, None
        try:
            out = self.mngr.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001 - any read failure means "try the previous"
            error = f"{type(e).__name__}: {e}"
        if jax.process_count() > 1 and multihost.any_process(error is not None) and error is None:
            error = "another process could not read it"
        return out, error

    def restore(
        self,
        abstract_params: Any,
        abstract_opt_state: Any | None = None,
        step: int | None = None,
    ) -> Restored | None:
        """Restore the newest good checkpoint (or `step`) into the given abstract shardings.

        `abstract_*` are pytrees of jax.ShapeDtypeStruct (with .sharding). Returns None when the
        directory holds no checkpoint at all. A step that fails verification or whose files
        orbax cannot read is logged, quarantined, and the previous one is tried. Every process
        restores the step process 0 chose.
        """
        self.wait()
        newest = multihost.broadcast_object(max(self.steps(), default=None))
        while True:
            good = self.latest_good_step() if step is None else step
            if good is None:
                return None
            if step is not None:
                reason = verify_step_dir(self.directory / str(step)) if is_primary() else None
                if jax.process_count() > 1 and multihost.broadcast_object(int(reason is not None)):
                    reason = reason or "process 0 found it incomplete (see its log)"
                if reason:
                    raise CheckpointError(f"checkpoint step {step} in {self.directory}: {reason}")
            items: dict[str, Any] = {
                "params": ocp.args.StandardRestore(abstract_params),
                "meta": ocp.args.JsonRestore(),
            }
            if abstract_opt_state is not None:
                items["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
            out, error = self._restore_agreed(good, items)
            if error is not None:
                if step is not None:
                    raise CheckpointError(f"cannot read checkpoint step {step}: {error}")
                self._quarantine(good, f"orbax could not restore it: {error}")
                if not is_primary() or not self._is_writer:
                    self._bad.add(good)
                continue
            if good != newest and is_primary():
                log.warning(
                    "using checkpoint step %d of %s: newer step %s was unusable (see above)",
                    good,
                    self.directory,
                    newest,
                )
            log.info("restored checkpoint step %d from %s", good, self.directory)
            opt = out["opt_state"] if abstract_opt_state is not None else None
            return Restored(good, out["params"], opt, dict(out["meta"]))

    def read_meta(self, step: int | None = None) -> tuple[int, dict[str, Any]]:
        step = self.latest_good_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {self.directory}")
        out = self.mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return step, dict(out["meta"])


def abstract_like(tree: Any, shardings: Any | None = None) -> Any:
    """ShapeDtypeStruct pytree of `tree` (arrays or ShapeDtypeStructs) with the given shardings."""
    if shardings is None:
        shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), tree)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


# ----------------------------------------------------------------------------- HF conversion
class _ReadOnlyNotice(logging.Filter):
    """Drops the two warnings orbax logs on every read-only open (every export, evaluation and
    init_from): "Given directory is read only" and "read_only=True, setting
    save_interval_steps=0". Reading is what the caller asked for; other warnings still show."""

    NOTICES = ("Given directory is read only", "CheckpointManagerOptions.read_only=True")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTICES)


_READ_ONLY_NOTICE = _ReadOnlyNotice()


def quiet_read_only_notice() -> None:
    """Install the filter on absl's logger (once; other absl/orbax messages still show)."""
    absl_logger = logging.getLogger("absl")
    if _READ_ONLY_NOTICE not in absl_logger.filters:
        absl_logger.addFilter(_READ_ONLY_NOTICE)


def find_checkpoint_dir(path: str | os.PathLike) -> epath.Path:
    """The orbax directory of `path`: a run's out_dir (holding `checkpoints/`) or the dir itself."""
    quiet_read_only_notice()
    p = run_path(path)
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    if not p.is_dir():
        what = "is not a directory" if p.exists() else "does not exist"
        raise CheckpointError(f"checkpoint directory {path} {what}")
    if not any(c.name.isdigit() for c in p.iterdir()):
        hint = (
            " (it is a Hugging Face model directory: use import-hf to convert it)"
            if (p / "config.json").is_file()
            else ""
        )
        raise CheckpointError(
            f"{path} holds no orbax checkpoint steps (expected numbered step directories, or a "
            f"run directory with checkpoints/){hint}"
        )
    return p


def load_meta_config(path: str | Path, step: int | None = None) -> Qwen3Config:
    """The model config stored in a checkpoint's meta."""
    ck = Checkpointer(find_checkpoint_dir(path), keep=None, async_save=False, read_only=True)
    try:
        step, meta = ck.read_meta(step)
    finally:
        ck.close()
    if "model_config" not in meta:
        raise CheckpointError(f"{path} step {step}: meta has no model_config")
    return config_from_json(meta["model_config"])


def _default_shardings(tree: Any) -> Any:
    """One device in a single process; several processes: sharded over every device (fsdp),
    so no process needs a device it cannot address and no device holds the whole model."""
    if jax.process_count() == 1:
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.tree.map(lambda _: dev, tree)
    from jaxrepair.model.sharding import make_mesh, param_shardings

    return param_shardings(tree, make_mesh({"data": 1, "fsdp": -1, "tensor": 1}))


def load_params(
    ckpt_dir: str | Path, step: int | None = None, mesh=None, dtype=None
) -> tuple[Qwen3Config, Any, int]:
    """(model config, params, step) of a checkpoint, params placed on `mesh` (default: one
    device, or all devices sharded when there are several processes). A LoRA checkpoint gives
    the base it points to with its adapters merged."""
    from jaxrepair.model.qwen3 import param_shapes
    from jaxrepair.model.sharding import param_shardings

    ck = Checkpointer(find_checkpoint_dir(ckpt_dir), keep=None, async_save=False, read_only=True)
    try:
        step, meta = ck.read_meta(step)
        if "model_config" not in meta:
            raise CheckpointError(f"{ckpt_dir} step {step}: meta has no model_config")
        lora = LORA_META in meta
        if not lora:
            cfg = config_from_json(meta["model_config"])
            saved_dtype = jnp.dtype(meta.get("param_dtype", "float32"))
            shapes = param_shapes(cfg, saved_dtype)
            shard = _default_shardings(shapes) if mesh is None else param_shardings(shapes, mesh)
            restored = ck.restore(abstract_like(shapes, shard), None, step=step)
            assert restored is not None
            params = restored.params
    finally:
        ck.close()
    if lora:  # adapters only: load the base they point to and merge
        return _load_merged(ckpt_dir, step, mesh, dtype)
    if dtype is not None:
        params = jax.tree.map(lambda p: p.astype(dtype), params)
    return cfg, params, step


# ----------------------------------------------------------------------------- LoRA
# A LoRA run's checkpoints hold only the adapters; meta["lora_base"] points to the base:
# {"kind": "hf" | "orbax" | "random", "path", "step" (orbax), "seed" (random), "fingerprint"}.
LORA_META, LORA_BASE_META = "lora", "lora_base"


def _hf_fingerprint(path: Path) -> str:
    """sha256 of config.json and every safetensors file's name, size and header (the tensor
    names, dtypes, shapes and offsets): cheap for a 32B model, changes when the weights are
    rewritten."""
    import hashlib
    import struct

    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")):
        with f.open("rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = fh.read(n)
        h.update(f"{f.name}:{f.stat().st_size}:".encode() + header)
    return h.hexdigest()


def base_pointer(kind: str, path: str | None, cfg: Qwen3Config, seed: int) -> dict[str, Any]:
    """Where a LoRA run's frozen base comes from, with a fingerprint that tells whether the
    source still holds the same weights."""
    import hashlib

    ptr: dict[str, Any] = {"kind": kind, "path": path}
    if kind == "hf":
        assert path is not None
        ptr["fingerprint"] = _hf_fingerprint(Path(path))
    elif kind == "orbax":
        assert path is not None
        ck = run_path(path)
        ck_reader = Checkpointer(ck, keep=None, async_save=False, read_only=True)
        try:
            step = ck_reader.latest_good_step()
        finally:
            ck_reader.close()
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {path}")
        marker = (ck / str(step) / COMMIT_MARKER).read_text()
        ptr["step"] = step
        ptr["fingerprint"] = hashlib.sha256(marker.encode()).hexdigest()
    else:
        ptr["seed"] = seed
        text = json.dumps([config_to_json(cfg), seed], sort_keys=True)
        ptr["fingerprint"] = hashlib.sha256(text.encode()).hexdigest()
    return ptr


def lora_meta(lora: Any, base_ref: Mapping[str, Any], base: Any) -> dict[str, Any]:
    """The meta a LoRA checkpoint adds: its LoRA config, the base pointer and dtypes."""
    return {
        LORA_META: dataclasses.asdict(lora),
        LORA_BASE_META: dict(base_ref),
        "param_dtype": jnp.dtype(base["embed"].dtype).name,
        "adapter_dtype": "float32",
    }


def check_base_pointer(meta: Mapping[str, Any], base_ref: Mapping[str, Any], where: str) -> None:
    """Refuse to resume or load adapters onto a base other than the one they were trained on."""
    saved = meta.get(LORA_BASE_META)
    if saved is None:
        raise CheckpointError(f"{where} holds no LoRA adapters (a full-weights checkpoint)")
    if saved.get("fingerprint") != base_ref.get("fingerprint"):
        raise CheckpointError(
            f"{where}: the LoRA adapters were trained on base {saved.get('kind')}:"
            f"{saved.get('path')} (fingerprint {str(saved.get('fingerprint'))[:12]}), but the "
            f"base is now {base_ref.get('kind')}:{base_ref.get('path')} (fingerprint "
            f"{str(base_ref.get('fingerprint'))[:12]})"
        )


def load_lora_base(ptr: Mapping[str, Any], cfg: Qwen3Config, mesh=None, dtype=None) -> Any:
    """The base weights a LoRA checkpoint points to, checked against its fingerprint."""
    kind, path = ptr.get("kind"), ptr.get("path")
    if kind == "hf":
        from jaxrepair.model import load_hf

        now = base_pointer("hf", path, cfg, 0)
        check_base_pointer({LORA_BASE_META: ptr}, now, f"LoRA base {path}")
        return load_hf(path, mesh=mesh, dtype=dtype)[1]
    if kind == "orbax":
        import hashlib

        marker = run_path(path) / str(ptr["step"]) / COMMIT_MARKER
        if not marker.is_file():
            raise CheckpointError(f"LoRA base {path} step {ptr['step']} is gone")
        now = {"fingerprint": hashlib.sha256(marker.read_text().encode()).hexdigest()}
        check_base_pointer({LORA_BASE_META: ptr}, now, f"LoRA base {path}")
        return load_params(path, ptr["step"], mesh=mesh, dtype=dtype)[1]
    if kind == "random":
        from jaxrepair.model import init_params

        seed = int(ptr["seed"])
        return init_params(cfg, jax.random.key(seed), mesh=mesh, dtype=dtype or jnp.float32)
    raise CheckpointError(f"unknown LoRA base kind {kind!r}")


def load_lora(
    ckpt_dir: str | Path, step: int | None = None, mesh=None, with_base: bool = True
) -> tuple[Qwen3Config, Any, Any, Any, int]:
    """(model config, LoRA config, base params, adapters, step) of a LoRA checkpoint; the
    base is None without `with_base`."""
    from jaxrepair.config import LoraConfig
    from jaxrepair.model.lora import adapter_shapes, adapter_shardings

    ck = Checkpointer(find_checkpoint_dir(ckpt_dir), keep=None, async_save=False, read_only=True)
    try:
        step, meta = ck.read_meta(step)
        if LORA_META not in meta:
            raise CheckpointError(f"{ckpt_dir} step {step} holds full weights, not LoRA adapters")
        cfg = config_from_json(meta["model_config"])
        raw = dict(meta[LORA_META])
        lora = LoraConfig(**{**raw, "targets": tuple(raw["targets"])})
        shapes = adapter_shapes(cfg, lora)
        if mesh is None:
            shard = _default_shardings(shapes)
        else:
            shard = adapter_shardings(cfg, lora, mesh)
        restored = ck.restore(abstract_like(shapes, shard), None, step=step)
        assert restored is not None
    finally:
        ck.close()
    if not with_base:
        return cfg, lora, None, restored.params, step
    base_dtype = jnp.dtype(meta.get("param_dtype", "float32"))
    base = load_lora_base(meta[LORA_BASE_META], cfg, mesh, base_dtype)
    return cfg, lora, base, restored.params, step


def lora_base_dir(ckpt_dir: str | Path, step: int | None = None) -> str:
    """The Hugging Face directory a LoRA checkpoint's base comes from (PEFT export needs one)."""
    ck = Checkpointer(find_checkpoint_dir(ckpt_dir), keep=None, async_save=False, read_only=True)
    try:
        step, meta = ck.read_meta(step)
    finally:
        ck.close()
    ptr = meta.get(LORA_BASE_META)
    if ptr is None:
        raise CheckpointError(f"{ckpt_dir} step {step} holds full weights, not LoRA adapters")
    if ptr.get("kind") != "hf":
        raise CheckpointError(
            f"{ckpt_dir}: PEFT adapters load onto a Hugging Face base, but this run's base is "
            f"{ptr.get('kind')}:{ptr.get('path')}; export merged weights instead"
        )
    return str(ptr["path"])


def _load_merged(ckpt_dir, step, mesh, dtype) -> tuple[Qwen3Config, Any, int]:
    """A LoRA checkpoint as full params: base + (alpha / r) A @ B, in the base's dtype."""
    from jaxrepair.model.lora import merge

    cfg, lora, base, adapters, step = load_lora(ckpt_dir, step, mesh)
    params = jax.jit(lambda b, a: merge(b, a, cfg, lora))(base, adapters)
    if dtype is not None:
        params = jax.tree.map(lambda p: p.astype(dtype), params)
    return cfg, params, step


def _all_devices_mesh():
    """Every device on the fsdp axis: each holds 1/N of every parameter, none the whole model."""
    from jaxrepair.model.sharding import make_mesh

    return make_mesh({"data": 1, "fsdp": -1, "tensor": 1})


def export_hf(
    ckpt_dir: str | Path,
    out_dir: str | Path,
    *,
    step: int | None = None,
    dtype: str | None = None,
    tokenizer_from: str | Path | None = None,
    replace: bool = False,
    mesh=None,
    peft: bool = False,
) -> Path:
    """Write a transformers `from_pretrained` directory from an orbax training checkpoint.

    A LoRA run's checkpoint is exported with its adapters merged into the base, or with
    `peft` as a PEFT adapter directory for its Hugging Face base (adapter_config.json +
    adapter_model.safetensors, fp32).

    `dtype` (bfloat16, float32, float16) defaults to the checkpoint's own parameter dtype, so
    an export is lossless unless asked otherwise. A non-empty `out_dir` is refused unless
    `replace` (see `jaxrepair.model.hf.save_hf`). The parameters are restored sharded over
    `mesh` (default: all devices) and written one layer slice at a time. The model config
    comes from the checkpoint; tokenizer files and generation_config.json from
    `tokenizer_from`, or from the checkpoint directory's `tokenizer/` (written by training and
    import). With several processes every process must call it (collectives); only process 0
    writes. The checkpoint may be a storage URI; `out_dir` is a local directory.
    """
    import tempfile

    from jaxrepair.model.hf import (
        GENERATION_CONFIG,
        TOKENIZER_FILES,
        agree,
        check_out_dir,
        export_dtype,
        save_hf,
    )

    if is_uri(out_dir):
        raise ValueError(
            f"export-hf writes a local directory, not {out_dir}: export locally, then copy it"
        )
    if dtype is not None:
        export_dtype(dtype)
    out = Path(out_dir).absolute()
    ck_dir = find_checkpoint_dir(ckpt_dir)
    error: BaseException | None = None
    if is_primary():  # refuse before the (long) restore
        try:
            check_out_dir(out, replace)
        except OSError as e:
            error = e
    agree(error)
    mesh = _all_devices_mesh() if mesh is None else mesh
    if peft:
        from jaxrepair.model.hf import save_peft_adapter

        base_dir = lora_base_dir(ck_dir, step)
        cfg, lora, _, adapters, step = load_lora(ck_dir, step, mesh, with_base=False)
        out = save_peft_adapter(out, cfg, lora, adapters, base_dir, replace=replace)
        if is_primary():
            log.info("exported LoRA adapters of step %d of %s to %s (PEFT)", step, ckpt_dir, out)
        return out
    cfg, params, step = load_params(ck_dir, step, mesh=mesh)
    tok: Any = tokenizer_from
    src = ck_dir / TOKENIZER_SUBDIR
    with tempfile.TemporaryDirectory() as tmp:
        if tok is None and is_primary() and src.is_dir():
            tok = src
            if is_uri(src):  # save_hf copies local files: fetch the few tokenizer files first
                for f in (*TOKENIZER_FILES, GENERATION_CONFIG):
                    if (src / f).is_file():
                        (Path(tmp) / f).write_bytes((src / f).read_bytes())
                tok = Path(tmp)
        out = save_hf(out, cfg, params, dtype=dtype, tokenizer_from=tok, replace=replace)
    if is_primary():
        written = dtype or jnp.dtype(params["embed"].dtype).name
        log.info("exported step %d of %s to %s (%s)", step, ckpt_dir, out, written)
    return out


def saved_generation_config(src: str | os.PathLike) -> dict[str, Any] | None:
    """The generation_config.json that travels with a model source, so a run started from it
    can store it beside its own tokenizer (export then writes it back): a Hugging Face
    directory's own, or the one in an orbax checkpoint's `tokenizer/` (import, earlier runs).
    None when there is none."""
    from jaxrepair.model.hf import GENERATION_CONFIG

    p = run_path(src)
    candidates = [p / GENERATION_CONFIG]
    if not (p / "config.json").is_file():  # an orbax run or checkpoint directory
        try:
            candidates = [find_checkpoint_dir(p) / TOKENIZER_SUBDIR / GENERATION_CONFIG]
        except CheckpointError:
            return None
    for c in candidates:
        if c.is_file():
            try:
                return dict(json.loads(c.read_text()))
            except ValueError as e:
                raise ValueError(f"{c} is not valid JSON: {e}") from e
    return None


def save_run_tokenizer(out_dir: str | os.PathLike, tokenizer: Any, src: str | None) -> None:
    """Process 0: the run's tokenizer into `out_dir/checkpoints/tokenizer/`, with the model
    source's generation_config.json (when `src` has one), so export writes both back."""
    from jaxrepair.model.hf import GENERATION_CONFIG
    from jaxrepair.train.storage import save_dir_once

    gen = saved_generation_config(src) if src is not None else None

    def write(d: Any) -> None:
        tokenizer.save(d)
        if gen is not None:
            (epath.Path(d) / GENERATION_CONFIG).write_text(json.dumps(gen, indent=2))

    save_dir_once(run_path(out_dir) / "checkpoints" / TOKENIZER_SUBDIR, write)


def _remove_partial(out: epath.Path, existed: bool) -> None:
    """Undo a failed import: the directory it created, or what it put in an empty one."""
    try:
        if not existed:
            if out.exists():
                out.rmtree()
            return
        for child in out.iterdir():
            child.rmtree() if child.is_dir() else child.unlink()
    except OSError as e:  # pragma: no cover - best effort, the original error matters more
        log.warning("could not remove the partial import at %s: %s", out, e)


def import_hf(
    hf_dir: str | Path,
    out_ckpt_dir: str | os.PathLike,
    *,
    dtype: str = "float32",
    mesh=None,
) -> epath.Path:
    """Turn a Hugging Face Qwen3 directory into a params-only orbax checkpoint at step 0.

    Checks everything it can before creating anything (the source's config and tensor shapes,
    an empty or missing target) and removes what it created when it fails. Tensors are read
    slice by slice straight into their shards on `mesh` (default: all devices), so no device
    and no host buffer holds the whole model. Tokenizer files and generation_config.json go to
    the checkpoint's `tokenizer/` (export carries them back out). With several processes
    every process must call it (each reads and writes its own shards; process 0 commits and
    copies the small files). `out_ckpt_dir` may be a storage URI.
    """
    from jaxrepair.model.hf import GENERATION_CONFIG, TOKENIZER_FILES, agree, check_hf_dir, load_hf

    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
    out = run_path(out_ckpt_dir)
    error: BaseException | None = None
    try:
        check_hf_dir(hf_dir)  # every process: each reads its own slices later
    except (OSError, ValueError) as e:
        error = e
    agree(error)
    existed = False
    if is_primary():
        try:
            existed = out.exists()
            if existed and not out.is_dir():
                raise FileExistsError(f"import target {out} exists and is not a directory")
            if existed and any(out.iterdir()):
                raise FileExistsError(
                    f"import target {out} is not empty; import into a new or empty directory"
                )
        except OSError as e:
            error = e
    agree(error)
    try:
        cfg, params = load_hf(
            hf_dir, mesh=_all_devices_mesh() if mesh is None else mesh, dtype=jnp.dtype(dtype)
        )
        meta = {
            "model_config": config_to_json(cfg),
            "param_dtype": jnp.dtype(dtype).name,
            "source": str(Path(hf_dir).absolute()),
        }
        ck = Checkpointer(out, keep=None, async_save=False)
        try:
            ck.save(0, params, None, meta)
        finally:
            ck.close()
        small = [f for f in (*TOKENIZER_FILES, GENERATION_CONFIG) if (Path(hf_dir) / f).is_file()]
        if small and is_primary():
            (out / TOKENIZER_SUBDIR).mkdir(parents=True, exist_ok=True)
            for f in small:
                (out / TOKENIZER_SUBDIR / f).write_bytes((Path(hf_dir) / f).read_bytes())
    except BaseException:
        if is_primary():
            _remove_partial(out, existed)
        raise
    return out

"""Run the real `jaxrepair` CLI as several JAX processes joined on loopback, and read the results.

    results = launch_cli(["sft", str(cfg), "--set", f"train.out_dir={out}"], cwd=tmp)
    summaries = read_summaries(results)        # the JSON summary each process printed
    params = load_checkpoint_params(out)        # flattened key -> np.ndarray (bitwise compare)

Every process gets `devices_per_process` fake CPU devices, `JAX_COORDINATOR_ADDRESS` on a free
loopback port, its own `JAX_PROCESS_ID`, and a persistent compilation cache shared by all
processes (so a test module compiles each program about once). `num_processes=1,
devices_per_process=8` is the single-process reference on the same 8-device mesh. That
process still joins a one-process `jax.distributed` runtime (before the CLI starts), so XLA
uses the same cross-process CPU collectives (gloo) as the multi-process runs: XLA's in-process
all-reduce sums in another order, which changes the last bit of an 8-way gradient sum.

With `JAXREPAIR_PARAMS_DIGEST=1` (set here) every process's summary holds `params_digest`: the
sha256 of each of its addressable parameter shards; `check_digests` proves that every copy of
every shard, on every process, equals the same slice of reference parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from tests.environ import one_device_xla_flags

REPO = Path(__file__).resolve().parents[2]
TAIL = 3000
SOLO_ENV = "JAXREPAIR_TEST_SOLO_COORDINATOR"
# `python -c BOOT ARGV...`: the CLI, after joining a one-process distributed runtime if asked.
BOOT = f"""
import os, runpy, sys
addr = os.environ.get({SOLO_ENV!r})
if addr:
    import jax
    jax.distributed.initialize(coordinator_address=addr, num_processes=1, process_id=0)
sys.argv = ["jaxrepair", *sys.argv[1:]]
runpy.run_module("jaxrepair.cli", run_name="__main__", alter_sys=True)
"""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compilation_cache_dir() -> Path:
    """The persistent XLA compilation cache shared by every process these tests start."""
    root = os.environ.get("JAXREPAIR_TEST_COMPILE_CACHE")
    if root:
        return Path(root)
    return Path(tempfile.gettempdir()) / f"jaxrepair-mp-compile-cache-{os.getuid()}"


def process_env(
    process_id: int,
    num_processes: int,
    devices_per_process: int,
    port: int,
    env_extra: dict[str, str] | None = None,
    solo_distributed: bool = True,
) -> dict[str, str]:
    """The environment of one CLI process (fake CPU devices, coordinator, shared cache)."""
    env = dict(os.environ)
    count = f"--xla_force_host_platform_device_count={devices_per_process}"
    env["XLA_FLAGS"] = f"{one_device_xla_flags()} {count}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", SOLO_ENV):
        env.pop(k, None)
    if num_processes == 1 and solo_distributed:
        env[SOLO_ENV] = f"127.0.0.1:{port}"
    if num_processes > 1:
        env["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"
        env["JAX_NUM_PROCESSES"] = str(num_processes)
        env["JAX_PROCESS_ID"] = str(process_id)
    cache = compilation_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    env["JAXREPAIR_PARAMS_DIGEST"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env.update(env_extra or {})
    return env


def _tail(text: str, n: int = TAIL) -> str:
    return text if len(text) <= n else "..." + text[-n:]


@dataclass
class ProcessGroup:
    """The running processes of one multi-process CLI launch (Popen handles, output files)."""

    argv: list[str]
    procs: list[subprocess.Popen]
    _out: list[IO[str]] = field(repr=False)
    _err: list[IO[str]] = field(repr=False)
    timeout_s: float = 240.0
    started: float = field(default_factory=time.monotonic)

    def send_signal(self, process_id: int, sig: int = signal.SIGTERM) -> None:
        """Signal one process only (a preempted host)."""
        self.procs[process_id].send_signal(sig)

    def stderr_so_far(self, process_id: int) -> str:
        """What a process has written to stderr until now (logs, progress)."""
        f = self._err[process_id]
        f.flush()
        return Path(f.name).read_text(errors="replace")

    def stdout_so_far(self, process_id: int) -> str:
        f = self._out[process_id]
        f.flush()
        return Path(f.name).read_text(errors="replace")

    def wait_for_output(
        self, process_id: int, text: str, timeout_s: float = 120.0, stream: str = "stderr"
    ) -> None:
        """Block until `text` appears in a process's stderr (or stdout); fail on timeout/exit."""
        read = self.stderr_so_far if stream == "stderr" else self.stdout_so_far
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in read(process_id):
                return
            if any(p.poll() is not None for p in self.procs):
                if text in read(process_id):
                    return
                self.kill()
                raise AssertionError(
                    f"a process exited before process {process_id} printed {text!r}\n"
                    + self._report(self.collect())
                )
            time.sleep(0.05)
        self.kill()
        raise AssertionError(
            f"process {process_id} did not print {text!r} within {timeout_s:.0f} s\n"
            + self._report(self.collect())
        )

    def kill(self) -> None:
        """SIGKILL every process (and its children) that is still running."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass

    def collect(self) -> list[subprocess.CompletedProcess]:
        out = []
        for p, fo, fe in zip(self.procs, self._out, self._err, strict=True):
            fo.flush()
            fe.flush()
            out.append(
                subprocess.CompletedProcess(
                    p.args,
                    p.returncode if p.returncode is not None else -9,
                    Path(fo.name).read_text(errors="replace"),
                    Path(fe.name).read_text(errors="replace"),
                )
            )
        return out

    def _report(self, results: list[subprocess.CompletedProcess]) -> str:
        parts = [f"jaxrepair {' '.join(self.argv)}"]
        for i, r in enumerate(results):
            parts.append(
                f"--- process {i}: exit {r.returncode}\n[stdout]\n{_tail(r.stdout, 800)}\n"
                f"[stderr]\n{_tail(r.stderr)}"
            )
        return "\n".join(parts)

    def wait(
        self, timeout_s: float | None = None, check: bool = True
    ) -> list[subprocess.CompletedProcess]:
        """Wait for every process; on timeout kill all and fail with their stderr tails.

        check=True also fails when any process exits non-zero.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        timed_out = False
        for p in self.procs:
            left = deadline - time.monotonic()
            try:
                p.wait(max(left, 0.01))
            except subprocess.TimeoutExpired:
                timed_out = True
                break
        if timed_out:
            self.kill()
            results = self.collect()
            self._close()
            raise AssertionError(
                f"timed out after {timeout:.0f} s; all processes killed\n" + self._report(results)
            )
        results = self.collect()
        self._close()
        if check and any(r.returncode != 0 for r in results):
            raise AssertionError("a process failed\n" + self._report(results))
        return results

    def _close(self) -> None:
        for f in (*self._out, *self._err):
            f.close()


def start_cli(
    argv: list[str],
    *,
    num_processes: int = 2,
    devices_per_process: int = 4,
    cwd: Path,
    env_extra: dict[str, str] | None = None,
    per_process_env: list[dict[str, str]] | None = None,
    timeout_s: float = 240,
    solo_distributed: bool = True,
    per_process_args: list[list[str]] | None = None,
) -> ProcessGroup:
    """Start `python -m jaxrepair.cli *argv` as `num_processes` JAX processes; do not wait.

    Output goes to files under `cwd/.mp-logs/` (never a pipe that could fill and block).
    `solo_distributed=False` runs a single process without any distributed runtime.
    `per_process_args[i]` is appended to process i's argv (e.g. a private `--set
    train.out_dir=...` per host).
    """
    for name, extra in (
        ("per_process_env", per_process_env),
        ("per_process_args", per_process_args),
    ):
        if extra is not None and len(extra) != num_processes:
            raise ValueError(f"{name} has {len(extra)} entries for {num_processes} processes")
    cwd = Path(cwd)
    logs = cwd / ".mp-logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs, outs, errs = [], [], []
    stamp = f"{time.strftime('%H%M%S')}-{port}"
    for i in range(num_processes):
        env = process_env(i, num_processes, devices_per_process, port, env_extra, solo_distributed)
        if per_process_env is not None:
            env.update(per_process_env[i])
        fo = open(logs / f"{stamp}-p{i}.out", "w+")  # noqa: SIM115
        fe = open(logs / f"{stamp}-p{i}.err", "w+")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", BOOT, *argv, *(per_process_args or [[]] * num_processes)[i]],
                cwd=cwd,
                env=env,
                stdout=fo,
                stderr=fe,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        outs.append(fo)
        errs.append(fe)
    return ProcessGroup(list(argv), procs, outs, errs, timeout_s)


def launch_cli(
    argv: list[str],
    *,
    num_processes: int = 2,
    devices_per_process: int = 4,
    cwd: Path,
    env_extra: dict[str, str] | None = None,
    per_process_env: list[dict[str, str]] | None = None,
    timeout_s: float = 240,
    check: bool = True,
    solo_distributed: bool = True,
    per_process_args: list[list[str]] | None = None,
) -> list[subprocess.CompletedProcess]:
    """Run the CLI as `num_processes` processes to the end; one CompletedProcess per process.

    Kills all and fails (AssertionError with every process's stderr tail) on timeout, and, when
    `check`, when any process exits non-zero.
    """
    group = start_cli(
        argv,
        num_processes=num_processes,
        devices_per_process=devices_per_process,
        cwd=cwd,
        env_extra=env_extra,
        per_process_env=per_process_env,
        timeout_s=timeout_s,
        solo_distributed=solo_distributed,
        per_process_args=per_process_args,
    )
    return group.wait(timeout_s, check=check)


# ----------------------------------------------------------------------------- results
def read_summary(stdout: str) -> dict[str, Any]:
    """The JSON summary the CLI prints last (`print(json.dumps(summary, indent=2))`)."""
    start = stdout.rfind("\n{\n")
    start = start + 1 if start >= 0 else (0 if stdout.startswith("{") else -1)
    if start < 0:
        raise AssertionError(f"no JSON summary in the output:\n{_tail(stdout)}")
    return json.loads(stdout[start:])


def read_summaries(results: list[subprocess.CompletedProcess]) -> list[dict[str, Any]]:
    """Every process's printed summary, in process order."""
    return [read_summary(r.stdout) for r in results]


def load_checkpoint_params(run_dir: Path, step: int | None = None) -> dict[str, np.ndarray]:
    """A run's saved parameters as host arrays, flattened "a/b/c" -> np.ndarray.

    Reads the orbax `params` item of `run_dir/checkpoints/STEP` (the newest committed step by
    default) with numpy restore, so it needs no devices or mesh of the run that wrote it.
    """
    import orbax.checkpoint as ocp

    ck = Path(run_dir)
    if (ck / "checkpoints").is_dir():
        ck = ck / "checkpoints"
    if step is None:
        steps = sorted(
            int(p.name)
            for p in ck.iterdir()
            if p.name.isdigit() and (p / "jaxrepair_commit.json").is_file()
        )
        if not steps:
            raise AssertionError(f"no committed checkpoint step in {ck}")
        step = steps[-1]
    path = ck / str(step) / "params"
    with ocp.PyTreeCheckpointer() as c:
        meta = c.metadata(path)
        tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta.tree
        restore_args = _map_tree(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        out = c.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return flatten(out)


def _map_tree(fn, tree):
    if isinstance(tree, dict):
        return {k: _map_tree(fn, v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_map_tree(fn, v) for v in tree)
    return fn(tree)


def flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> {"a/b": array}."""
    if isinstance(tree, dict):
        out: dict[str, np.ndarray] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}/"))
        return out
    return {prefix.rstrip("/"): np.asarray(tree)}


def assert_params_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Bitwise equality of two flattened parameter sets (same keys, dtypes, shapes, bytes)."""
    assert sorted(a) == sorted(b), f"different parameter names: {sorted(a)} vs {sorted(b)}"
    bad = [
        k
        for k in a
        if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes()
    ]
    if bad:
        k = bad[0]
        diff = np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))
        raise AssertionError(f"{len(bad)} parameters differ, e.g. {k} (max |diff| {diff})")


def parse_shard_key(key: str) -> tuple[str, tuple[slice, ...]]:
    """ "a/b@0:4,:" -> ("a/b", (slice(0, 4), slice(None)))."""
    name, _, idx = key.rpartition("@")
    sl = []
    for part in idx.split(",") if idx else []:
        lo, _, hi = part.partition(":")
        sl.append(slice(int(lo) if lo else None, int(hi) if hi else None))
    return name, tuple(sl)


def check_digests(
    summaries: list[dict[str, Any]], reference: dict[str, np.ndarray]
) -> dict[str, int]:
    """Every process's shard digests (`params_digest`) equal sha256 of the same slice of
    `reference` (flattened host params), and together they cover every parameter.

    Returns {"shards": checked shard copies, "processes": n}. Fails naming the first mismatch.
    """
    covered: set[str] = set()
    n = 0
    for pid, s in enumerate(summaries):
        digests = s.get("params_digest")
        assert digests, f"process {pid} printed no params_digest"
        for key, hashes in digests.items():
            name, idx = parse_shard_key(key)
            assert name in reference, f"process {pid}: unknown parameter {name}"
            want = hashlib.sha256(np.ascontiguousarray(reference[name][idx]).tobytes()).hexdigest()
            for h in hashes:
                assert h == want, f"process {pid}: shard {key} differs from the reference"
                n += 1
            covered.add(name)
    missing = set(reference) - covered
    assert not missing, f"no process holds a shard of {sorted(missing)}"
    return {"shards": n, "processes": len(summaries)}


# ----------------------------------------------------------------------------- tiny runs
TINY_SFT_TOML = """\
[model]
preset = "tiny"
dtype = "float32"
param_dtype = "float32"

[mesh]
data = {data}
fsdp = {fsdp}
tensor = {tensor}

[data]
train_paths = ["{traj}"]
seq_len = 256
batch_size = 8
packing = true

[optim]
lr = 3e-3
warmup_steps = 2
schedule = "cosine"
weight_decay = 0.01
clip_norm = 1.0

[train]
steps = {steps}
seed = 0
log_every = 1
out_dir = "{out_dir}"
checkpoint_every = {checkpoint_every}
checkpoint_keep = 3

[sft]
thinking = "drop"

[tokenizer]
spec = "tiny"
"""


def write_tiny_sft(
    directory: Path,
    *,
    steps: int = 4,
    checkpoint_every: int = 2,
    mesh: tuple[int, int, int] = (2, 4, 1),
    n_trajectories: int = 16,
    out_dir: str = "run",
) -> Path:
    """Write `trajectories.jsonl` and `tiny_sft.toml` (tiny preset, tokenizer "tiny", mesh
    (data, fsdp, tensor), 8 rows per step) into `directory`; returns the TOML path.

    Anything else is changed with `--set section.key=value` on the command line.
    """
    from tests.train.trajectories import write_trajectories

    directory = Path(directory)
    traj = write_trajectories(directory / "trajectories.jsonl", n=n_trajectories)
    data, fsdp, tensor = mesh
    toml = directory / "tiny_sft.toml"
    toml.write_text(
        TINY_SFT_TOML.format(
            data=data,
            fsdp=fsdp,
            tensor=tensor,
            traj=traj.as_posix(),
            steps=steps,
            out_dir=out_dir,
            checkpoint_every=checkpoint_every,
        )
    )
    return toml

"""The launch scripts, run for real with bash against stub `gcloud` / `srun` that record their argv.

The stub gcloud plays a TPU slice of two hosts, each a directory with its own home: `scp`
copies files into the homes of the workers asked for, `ssh` runs the command in each home
with a shell (as sshd does) and, like ssh, returns only when the command's output closes.
Each host's virtual environment holds a stub `python` that records the argv, working
directory, session, signal disposition and file descriptors it was started with, so the
tests check what the trainer on every host would really receive.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TPU_SCRIPT = REPO / "launch" / "tpu_pod.sh"
SLURM_SCRIPT = REPO / "launch" / "slurm_gpu.sbatch"
CONFIG = REPO / "launch" / "configs" / "tiny_grpo.toml"

GCLOUD = r"""#!PYTHON
import json, os, pathlib, shutil, subprocess, sys
argv = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({"prog": "gcloud", "argv": argv}) + "\n")
hosts = sorted(p for p in pathlib.Path(os.environ["STUB_HOSTS"]).iterdir() if p.is_dir())
worker = next((a.split("=", 1)[1] for a in argv if a.startswith("--worker=")), "0")
targets = hosts if worker == "all" else [hosts[int(worker)]]
if argv[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
    *srcs, dest = [a for a in argv[4:] if not a.startswith("--")]
    rel = dest.split(":", 1)[1]
    for h in targets:
        for s in srcs:
            shutil.copy(s, h / "home" / rel)
    sys.exit(0)
if argv[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
    cmd = next(a.split("=", 1)[1] for a in argv if a.startswith("--command="))
    rc = 0
    for h in targets:
        env = {"HOME": str(h / "home"), "PATH": f"{h / 'bin'}:/usr/bin:/bin", "LANG": "C.UTF-8"}
        p = subprocess.run([os.environ.get("STUB_SHELL", "bash"), "-c", cmd], cwd=h / "home",
                           env=env, capture_output=True, text=True)
        sys.stdout.write(p.stdout)
        sys.stderr.write(p.stderr)
        rc = rc or p.returncode
    sys.exit(rc)
sys.exit(f"stub gcloud: unexpected {argv}")
"""

# A host's `python3`: version check and `-m venv DIR`, which makes a venv of stub pythons.
PYTHON3 = r"""#!PYTHON
import os, pathlib, shutil, sys
if sys.argv[1:3] == ["-m", "venv"]:
    bin_ = pathlib.Path(sys.argv[3]).resolve() / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "activate").write_text(f'export PATH="{bin_}:$PATH"\n')
    shutil.copy(pathlib.Path(__file__).with_name("venv_python"), bin_ / "python")
sys.exit(0)
"""

# The venv's `python`: records how it was started; as the trainer, runs until SIGTERM.
VENV_PYTHON = r"""#!PYTHON
import hashlib, json, os, pathlib, signal, sys, time
argv = sys.argv[1:]
def sha(p):
    return hashlib.sha256(pathlib.Path(p).read_bytes()).hexdigest() if os.path.isfile(p) else None
rec = {"argv": argv, "cwd": os.getcwd(), "pid": os.getpid(),
       "session_leader": os.getsid(0) == os.getpid(),
       "sighup_ignored": signal.getsignal(signal.SIGHUP) == signal.SIG_IGN,
       "stdin": os.readlink("/proc/self/fd/0"), "stdout": os.readlink("/proc/self/fd/1"),
       "config_sha": sha(argv[3]) if len(argv) > 3 else None,
       "distributed_sha": sha("jaxrepair/distributed.py")}
log = pathlib.Path(os.environ["HOME"]) / "python_calls.jsonl"
def write(r):
    with open(log, "a") as f:
        f.write(json.dumps(r) + "\n")
write(rec)
if argv[:1] == ["-c"]:
    print("jax stub")
if argv[:2] == ["-m", "jaxrepair.cli"]:
    def stop(*_):
        write({"event": "sigterm", "pid": os.getpid()})
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("trainer step 1", flush=True)
    time.sleep(60)
"""


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text.replace("PYTHON", sys.executable, 1))
    path.chmod(0o755)


@pytest.fixture
def slice2(tmp_path):
    """Two fake TPU hosts and a PATH whose gcloud is the recording stub."""
    stub_bin = tmp_path / "stubbin"
    stub_bin.mkdir()
    _write_exe(stub_bin / "gcloud", GCLOUD)
    hosts = tmp_path / "hosts"
    for i in range(2):
        h = hosts / f"host{i}"
        (h / "home").mkdir(parents=True)
        (h / "bin").mkdir()
        _write_exe(h / "bin" / "hostname", f"#!/bin/sh\necho host{i}\n")
        _write_exe(h / "bin" / "python3", PYTHON3)
        _write_exe(h / "bin" / "venv_python", VENV_PYTHON)
    log = tmp_path / "calls.jsonl"
    env = dict(os.environ)
    env.update(
        PATH=f"{stub_bin}:{os.environ['PATH']}",
        STUB_LOG=str(log),
        STUB_HOSTS=str(hosts),
    )

    class Slice:
        root = tmp_path
        homes = [hosts / f"host{i}" / "home" for i in range(2)]

        def run(self, *args: str, shell: str = "bash", timeout: float = 20):
            e = dict(env, STUB_SHELL=shell)
            return subprocess.run(
                ["bash", str(TPU_SCRIPT), *args],
                env=e,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=REPO,
            )

        def calls(self) -> list[dict]:
            if not log.exists():
                return []
            return [json.loads(line) for line in log.read_text().splitlines()]

        def python_calls(self, i: int) -> list[dict]:
            p = self.homes[i] / "python_calls.jsonl"
            return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    s = Slice()
    yield s
    for home in s.homes:  # stop any trainer stub a failed test left running (by its pid)
        pid_file = home / "jaxrepair" / "runs" / "launch" / "pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _trainer_records(s, i: int) -> list[dict]:
    return [r for r in s.python_calls(i) if r.get("argv", [])[:2] == ["-m", "jaxrepair.cli"]]


def _wait(pred, timeout: float = 10.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--set", "a.b=two words", "--set", "c='single' \"double\" $HOME `id` \\ & ;", "--set", ""],
        ["--set", "multi=line\nvalue\n"],
    ],
    ids=["no-set", "quotes-spaces-empty", "newlines"],
)
def test_tpu_run_ships_code_and_forwards_argv_exactly(slice2, args):
    setup = slice2.run("my-tpu", "us-east5-a", "setup")
    assert setup.returncode == 0, setup.stderr
    assert "host0: installed jax stub" in setup.stdout and "host1: installed" in setup.stdout

    t0 = time.time()
    out = slice2.run("my-tpu", "us-east5-a", "grpo", str(CONFIG), *args)
    returned_after = time.time() - t0
    assert out.returncode == 0, out.stderr
    # Detached: the launch returned while the (60 s) trainer on each host is still running.
    assert returned_after < 15
    for i in range(2):
        assert _wait(lambda i=i: _trainer_records(slice2, i)), f"no trainer on host{i}"
        rec = _trainer_records(slice2, i)[-1]
        assert rec["argv"] == ["-m", "jaxrepair.cli", "grpo", ".launch/tiny_grpo.toml", *args]
        assert rec["cwd"] == str(slice2.homes[i] / "jaxrepair")
        assert rec["config_sha"] == _sha(CONFIG)  # the config was shipped to every host
        assert rec["distributed_sha"] == _sha(REPO / "jaxrepair" / "distributed.py")  # the code too
        assert rec["session_leader"] and rec["sighup_ignored"]  # setsid + nohup
        assert rec["stdin"] == "/dev/null"
        assert rec["stdout"] == str(slice2.homes[i] / "jaxrepair/runs/launch" / f"host{i}.log")
        os.kill(rec["pid"], 0)  # still alive after the ssh session ended

    calls = [c["argv"] for c in slice2.calls()]
    kinds = [c[3] for c in calls]
    assert kinds == ["scp", "ssh", "scp", "ssh"]  # setup: ship, install; run: ship, start
    for c in calls:
        assert "--worker=all" in c and "--zone=us-east5-a" in c and "my-tpu" in " ".join(c)


def test_tpu_ships_the_working_tree_not_ignored_files(slice2):
    assert slice2.run("t", "z", "setup").returncode == 0
    tree = slice2.homes[0] / "jaxrepair"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    expected = [f for f in tracked if f and (REPO / f).is_file()]
    assert expected and all((tree / f).is_file() for f in expected)
    assert (tree / "launch" / "tpu_pod.sh").read_bytes() == TPU_SCRIPT.read_bytes()
    assert not (tree / ".git").exists()
    assert not list(tree.rglob("__pycache__"))  # ignored files stay behind
    assert [p.name for p in (tree / ".venv" / "bin").iterdir()] != []  # made by setup there
    assert not (slice2.homes[0] / "jaxrepair-ship.tar.gz").exists()  # unpacked and removed


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_tpu_status_logs_stop_and_second_run(slice2, shell):
    assert slice2.run("t", "z", "setup", shell=shell).returncode == 0
    assert slice2.run("t", "z", "sft", str(CONFIG), shell=shell).returncode == 0
    for i in range(2):
        assert _wait(lambda i=i: _trainer_records(slice2, i))
    st = slice2.run("t", "z", "status", shell=shell)
    assert "host0: running" in st.stdout and "host1: running" in st.stdout, st.stdout + st.stderr

    logs = slice2.run("t", "z", "logs", "5", shell=shell)
    assert "[host0] trainer step 1" in logs.stdout and "[host1] trainer step 1" in logs.stdout

    for again in (["sft", str(CONFIG)], ["setup"]):  # neither replaces the code under the run
        out = slice2.run("t", "z", *again, shell=shell)
        assert out.returncode != 0 and "host0: a run is still going" in out.stderr
    assert len(_trainer_records(slice2, 0)) == 1  # nothing new started

    stop = slice2.run("t", "z", "stop", shell=shell)
    assert stop.returncode == 0 and "sent SIGTERM" in stop.stdout
    for i in range(2):
        pid = _trainer_records(slice2, i)[-1]["pid"]
        assert _wait(
            lambda i=i, pid=pid: {"event": "sigterm", "pid": pid} in slice2.python_calls(i)
        )
    assert _wait(lambda: "host0: not running" in slice2.run("t", "z", "status").stdout)


def test_tpu_run_without_setup_fails_clearly(slice2):
    out = slice2.run("t", "z", "grpo", str(CONFIG))
    assert out.returncode != 0
    assert "no ~/jaxrepair/.venv; run first: launch/tpu_pod.sh t z setup" in out.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "usage"),
        (["t", "z"], "usage"),
        (["t", "z", "train"], "unknown command 'train'"),
        (["t", "z", "grpo"], "grpo needs a config TOML"),
        (["t", "z", "grpo", "nope.toml"], "config not found: nope.toml"),
        (["", "z", "setup"], "bad TPU name ''"),
        (["t", "us east", "setup"], "bad zone 'us east'"),
        (["t", "z", "logs", "x"], "logs takes one optional line count"),
        (["t", "z", "stop", "now"], "stop takes no arguments"),
    ],
)
def test_tpu_usage_errors_call_nothing(slice2, args, message):
    out = slice2.run(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert slice2.calls() == []


SRUN = r"""#!PYTHON
import json, os, sys
keep = ("JAX_LOCAL_DEVICE_IDS", "XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION", "CUDA_VISIBLE_DEVICES")
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in keep}}) + "\n")
"""


def _sbatch(tmp_path, args, **slurm_env):
    stub_bin = tmp_path / "stubbin"
    stub_bin.mkdir(exist_ok=True)
    _write_exe(stub_bin / "srun", SRUN)
    log = tmp_path / "srun.jsonl"
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_", "XLA_"))}
    env.update(PATH=f"{stub_bin}:{os.environ['PATH']}", STUB_LOG=str(log), **slurm_env)
    out = subprocess.run(
        ["bash", str(SLURM_SCRIPT), *args], env=env, capture_output=True, text=True, cwd=REPO
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return out, calls


SLURM_BATCH_ENV = dict(
    SLURM_JOB_ID="4242",
    SLURM_JOB_NUM_NODES="2",
    SLURM_NNODES="2",
    SLURM_GPUS_PER_NODE="h100:8",
    SLURM_CPUS_PER_TASK="96",
)


def test_sbatch_one_task_per_node_with_all_gpus_and_exact_argv(tmp_path):
    args = ["--set", "a.b=two words", "--set", "q='x' \"y\" $HOME"]
    cfg = "launch/configs/tiny_grpo.toml"
    out, calls = _sbatch(tmp_path, ["grpo", cfg, *args], **SLURM_BATCH_ENV)
    assert out.returncode == 0, out.stderr
    plan, run = calls
    p = plan["argv"]
    assert p[p.index("python") :] == [
        *("python", "-m", "jaxrepair.cli", "plan", "--config", cfg, "--devices", "16")
    ]
    assert {"--nodes=1", "--ntasks=1"} <= set(p[: p.index("python")])
    i = run["argv"].index("python")
    assert run["argv"][i:] == ["python", "-m", "jaxrepair.cli", "grpo", cfg, *args]
    opts = run["argv"][:i]
    assert {"--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=96"} <= set(opts)
    assert not [o for o in opts if o.startswith("--gpu-bind")]
    assert run["env"]["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in run["env"]["XLA_FLAGS"]


def test_sbatch_binding_matches_what_jax_initialize_picks(tmp_path, monkeypatch):
    """Each srun task, seen by JAX's own jax.distributed start-up, drives all 8 local GPUs."""
    from tests.test_distributed import jax_initialize_args

    _, calls = _sbatch(tmp_path, ["sft", "launch/configs/tiny_sft.toml"], **SLURM_BATCH_ENV)
    exported = {k: v for k, v in calls[1]["env"].items() if v is not None}
    for proc in range(2):  # what srun sets per task: one task per node, so SLURM_LOCALID=0
        task = dict(
            SLURM_JOB_ID="4242",
            SLURM_STEP_NODELIST="gpu[017-018]",
            SLURM_NTASKS="2",
            SLURM_PROCID=str(proc),
            SLURM_LOCALID="0",
            **exported,
        )
        got = jax_initialize_args(monkeypatch, task)
        assert got["num_processes"] == 2 and got["process_id"] == proc
        assert got["coordinator"].startswith("gpu017:")
        assert got["visible_devices"] == "0,1,2,3,4,5,6,7"
        # Without the export JAX would bind each process to the GPU numbered SLURM_LOCALID.
        task.pop("JAX_LOCAL_DEVICE_IDS")
        assert jax_initialize_args(monkeypatch, task)["visible_devices"] == "0"


@pytest.mark.parametrize(
    "args, env, message",
    [
        ([], SLURM_BATCH_ENV, "usage: sbatch"),
        (["train", "launch/configs/tiny_sft.toml"], SLURM_BATCH_ENV, "unknown command 'train'"),
        (["sft", "missing.toml"], SLURM_BATCH_ENV, "config not found: missing.toml"),
        (["sft", "launch/configs/tiny_sft.toml"], {}, "not inside a SLURM job"),
        (
            ["sft", "launch/configs/tiny_sft.toml"],
            {**SLURM_BATCH_ENV, "SLURM_GPUS_PER_NODE": "gpu"},
            "cannot tell the GPUs per node",
        ),
    ],
)
def test_sbatch_usage_errors_run_nothing(tmp_path, args, env, message):
    out, calls = _sbatch(tmp_path, args, **env)
    assert out.returncode == 2 and message in out.stderr
    assert calls == []


def test_sbatch_single_node_uses_gpus_on_node(tmp_path):
    env = dict(SLURM_JOB_ID="1", SLURM_NNODES="1", SLURM_GPUS_ON_NODE="4")
    out, calls = _sbatch(tmp_path, ["eval", "launch/configs/tiny_grpo.toml"], **env)
    assert out.returncode == 0, out.stderr
    assert calls[0]["argv"][-1] == "4" and calls[1]["env"]["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3"
    assert not [a for a in calls[1]["argv"] if a.startswith("--cpus-per-task")]

"""Checkpoints: exact resume after SIGTERM / SIGKILL of a real training process, fallback from
corrupt or half-written checkpoints, and orbax <-> Hugging Face conversion checked in transformers."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepair.train.checkpoint import (
    COMMIT_MARKER,
    QUARANTINE,
    Checkpointer,
    abstract_like,
    export_hf,
    import_hf,
    load_params,
)
from tests.environ import one_device_xla_flags
from tests.train.trajectories import write_trajectories

WORKER = Path(__file__).with_name("ckpt_worker.py")
REPO = Path(__file__).resolve().parents[2]
STEPS = 10


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    traj = write_trajectories(d / "traj.jsonl", n=8)
    env = os.environ.copy()
    # one CPU device in the workers, and one compilation cache shared by all of them
    env["XLA_FLAGS"] = one_device_xla_flags()
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = str(d / "jax-cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return d, traj, env


def _cmd(out: Path, traj: Path, sleep_s: float = 0.0) -> list[str]:
    return [sys.executable, str(WORKER), str(out), str(traj), str(STEPS), str(sleep_s)]


def _summary(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("SUMMARY ")]
    assert lines, f"worker printed no summary:\n{stdout[-3000:]}"
    return json.loads(lines[-1][len("SUMMARY ") :])


def _run(cmd, env) -> dict:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return _summary(p.stdout)


@pytest.fixture(scope="module")
def straight(work):
    d, traj, env = work
    out = d / "straight"
    summary = _run(_cmd(out, traj), env)
    assert summary["step"] == STEPS and not summary["resumed"]
    return out


def _final_params(out: Path) -> dict:
    _, params, step = load_params(out)
    assert step == STEPS
    return jax.tree.map(np.asarray, params)


def _committed_steps(ckpt: Path) -> list[int]:
    if not ckpt.is_dir():
        return []
    return sorted(
        int(p.name) for p in ckpt.iterdir() if p.name.isdigit() and (p / COMMIT_MARKER).is_file()
    )


@pytest.mark.parametrize(
    "sig",
    # SIGTERM is covered across processes by tests/multiprocess (coordinated preemption);
    # both run in the slow tier (the default suite keeps the multi-process resume tests)
    [
        pytest.param(signal.SIGTERM, marks=pytest.mark.slow),
        pytest.param(signal.SIGKILL, marks=pytest.mark.slow),
    ],
    ids=["sigterm", "sigkill"],
)
def test_kill_and_resume_matches_straight_run(work, straight, sig):
    d, traj, env = work
    out = d / f"killed-{sig.name}"
    proc = subprocess.Popen(
        _cmd(out, traj, sleep_s=0.4),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while not any(s >= 4 for s in _committed_steps(out / "checkpoints")):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "worker never wrote checkpoint 4"
            time.sleep(0.05)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, stderr[-3000:]
        first = _summary(stdout)
        assert first["preempted"] and first["step"] < STEPS
        # the handler saved exactly the step the loop stopped at
        assert first["step"] in _committed_steps(out / "checkpoints")
    else:
        assert proc.returncode == -signal.SIGKILL
    stopped_at = max(_committed_steps(out / "checkpoints"))
    assert stopped_at < STEPS

    resumed = _run(_cmd(out, traj), env)
    assert resumed["resumed"] and resumed["step"] == STEPS

    want, got = _final_params(straight), _final_params(out)
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(got), strict=True
    ):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    # and the logged losses of the steps after the resume point are the same numbers
    straight_rows = {r["step"]: r for r in map(json.loads, open(straight / "metrics.jsonl"))}
    resumed_rows = [json.loads(x) for x in open(out / "metrics.jsonl")]
    for r in resumed_rows:
        if r["step"] > stopped_at:
            assert r["loss"] == straight_rows[r["step"]]["loss"], r["step"]


# ----------------------------------------------------------------------------- corruption
def _tree(v: float) -> dict:
    return {"w": jnp.full((64, 32), v, jnp.float32), "b": {"c": jnp.arange(7.0) + v}}


def _biggest_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "params").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def test_corrupt_or_half_written_checkpoint_falls_back(tmp_path, caplog):
    ck = Checkpointer(tmp_path, keep=5, async_save=True)
    for s in (1, 2, 3, 4):
        ck.save(s, _tree(float(s)), None, {"rng": [0, s]})
    ck.close()
    abstract = abstract_like(_tree(0.0))

    # 4: a data file truncated after the save finished
    big = _biggest_file(tmp_path / "4")
    big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    # 3: half-written (the commit marker was never written)
    (tmp_path / "3" / COMMIT_MARKER).unlink()
    # 2: a file deleted
    _biggest_file(tmp_path / "2").unlink()

    ck = Checkpointer(tmp_path, keep=5)
    with caplog.at_level(logging.WARNING, logger="jaxrepair.train.checkpoint"):
        r = ck.restore(abstract)
    assert r is not None and r.step == 1 and r.meta["rng"] == [0, 1]
    np.testing.assert_array_equal(np.asarray(r.params["w"]), np.full((64, 32), 1.0))
    text = caplog.text
    assert "step 4" in text and "bytes" in text  # truncated: size mismatch named
    assert "step 3" in text and "commit marker" in text
    assert "step 2" in text and "missing" in text
    assert "using checkpoint step 1" in text and "newer step 4" in text
    quarantined = sorted(p.name.split("-")[0] for p in (tmp_path / QUARANTINE).iterdir())
    assert quarantined == ["2", "3", "4"]
    assert ck.steps() == [1]
    # training goes on: the step numbers of the bad checkpoints can be saved again
    ck.save(2, _tree(22.0), None, {"rng": [0, 22]})
    ck.wait()
    assert ck.restore(abstract).step == 2
    ck.close()


def test_unreadable_content_with_intact_sizes_falls_back(tmp_path, caplog):
    ck = Checkpointer(tmp_path, keep=5, async_save=False)
    for s in (1, 2):
        ck.save(s, _tree(float(s)), None, {})
    ck.close()
    for p in (tmp_path / "2" / "params").rglob("*"):
        if p.is_file() and p.name != "commit_success.txt":
            p.write_bytes(b"\0" * p.stat().st_size)  # same size, garbage content
    ck = Checkpointer(tmp_path, keep=5)
    with caplog.at_level(logging.WARNING, logger="jaxrepair.train.checkpoint"):
        r = ck.restore(abstract_like(_tree(0.0)))
    ck.close()
    assert r is not None and r.step == 1
    assert "orbax could not restore" in caplog.text


def test_read_only_reader_skips_but_never_moves(tmp_path):
    ck = Checkpointer(tmp_path, keep=5, async_save=False)
    for s in (1, 2):
        ck.save(s, _tree(float(s)), None, {})
    ck.close()
    (tmp_path / "2" / COMMIT_MARKER).unlink()  # e.g. a live run that has not committed yet
    ro = Checkpointer(tmp_path, read_only=True)
    assert ro.restore(abstract_like(_tree(0.0))).step == 1
    assert (tmp_path / "2").is_dir() and not (tmp_path / QUARANTINE).exists()
    with pytest.raises(Exception, match="read-only"):
        ro.save(3, _tree(3.0), None, {})
    ro.close()


def test_empty_directory_restores_nothing(tmp_path):
    ck = Checkpointer(tmp_path / "none")
    assert ck.restore(abstract_like(_tree(0.0))) is None
    ck.close()


# ----------------------------------------------------------------------------- HF export
def test_export_hf_loads_in_transformers_with_same_logits(straight, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from jaxrepair.model import forward

    cfg, params, _ = load_params(straight)
    hf_dir = export_hf(straight, tmp_path / "hf", dtype="float32")
    model = transformers.Qwen3ForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        want = model(input_ids=torch.as_tensor(tokens)).logits.numpy()
    got = np.asarray(forward(params, cfg, jnp.asarray(tokens)))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    # the run's tokenizer travels with the export
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    from tests.train.trajectories import make_tokenizer

    text = "<|im_start|>assistant\nI will look at src/slugkit/__init__.py first.<|im_end|>"
    assert hf_tok.encode(text, add_special_tokens=False) == make_tokenizer().encode(text)

    # and back: import_hf gives the same parameters bit for bit
    back = import_hf(hf_dir, tmp_path / "orbax")
    cfg2, params2, step = load_params(back)
    ids = dict(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id)
    assert step == 0 and cfg2.replace(remat=cfg.remat, **ids) == cfg
    # the exported ids are the run tokenizer's real stop tokens (inside its vocabulary)
    assert cfg2.eos_token_id == make_tokenizer().im_end_id < cfg.vocab_size
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------- storage URIs
class _MappedBackend:
    """An etils backend serving `gs://...` from a local folder (stands in for GCS)."""

    def __init__(self, root: Path):
        from etils.epath import backend

        self.root, self.os = root, backend.os_backend

    def _p(self, path) -> str:
        s = os.fspath(path)
        assert s.startswith("gs://"), s
        return str(self.root / s[len("gs://") :])

    def __getattr__(self, name):
        fn = getattr(self.os, name)

        def call(path, *args, **kwargs):
            args = [self._p(a) if str(a).startswith("gs://") else a for a in args]
            out = fn(self._p(path), *args, **kwargs)
            if name == "walk":  # report roots in gs:// form, as a GCS backend would
                return (("gs://" + str(Path(r).relative_to(self.root)), d, f) for r, d, f in out)
            if name == "glob":
                return ["gs://" + str(Path(x).relative_to(self.root)) for x in out]
            return out

        return call


@pytest.fixture
def fake_gs(tmp_path, monkeypatch):
    from etils.epath import gpath

    root = tmp_path / "bucket-root"
    root.mkdir()
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", _MappedBackend(root))
    monkeypatch.chdir(tmp_path)
    return root


def test_run_path_keeps_uris_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    from jaxrepair.train.storage import StorageError, run_path

    monkeypatch.chdir(tmp_path)
    for uri in ("gs://bucket/runs/a", "s3://bucket/x"):
        assert str(run_path(uri)) == uri
        assert str(run_path(uri) / "checkpoints") == uri + "/checkpoints"
    assert str(run_path("runs/a")) == str(tmp_path / "runs" / "a")
    with pytest.raises(StorageError, match="nope:// is not supported"):
        run_path("nope://bucket/x")


def test_uri_out_dir_files_land_in_storage_not_in_a_local_gs_folder(fake_gs, tmp_path):
    """Run-level files of a gs:// out_dir (metrics, text files, a tokenizer folder, commit
    markers) go through the storage backend; nothing named `gs:` appears locally."""
    from jaxrepair.train.checkpoint import _manifest, verify_step_dir
    from jaxrepair.train.storage import (
        check_shared_storage,
        run_path,
        save_dir_once,
        write_text_once,
    )
    from jaxrepair.train.trainer import MetricsLogger

    out = run_path("gs://bucket/run")
    check_shared_storage(out)  # one process: creates the directory, nothing to agree on
    write_text_once(out / "summary.json", "{}")
    save_dir_once(out / "tok", lambda d: (Path(d) / "tokenizer.json").write_text("t"))
    m = MetricsLogger(out, total_steps=2, tensorboard=False, progress=False)
    m.log(1, {"loss": 2.0})
    m.log(2, {"loss": 1.0})
    m.close()
    m = MetricsLogger(out, total_steps=3, start_step=2, tensorboard=False, progress=False)
    m.log(3, {"loss": 0.5})  # a resumed run keeps the earlier rows (no append on GCS)
    m.close()
    local = fake_gs / "bucket" / "run"
    rows = [json.loads(x)["step"] for x in (local / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3]
    assert (local / "summary.json").read_text() == "{}"
    assert (local / "tok" / "tokenizer.json").read_text() == "t"
    step = out / "5"
    (step / "params").mkdir(parents=True)
    (step / "params" / "data").write_bytes(b"x" * 10)
    marker = {"step": 5, "files": _manifest(step)}
    assert marker["files"] == {"params/data": 10}
    (step / COMMIT_MARKER).write_text(json.dumps(marker))
    assert verify_step_dir(step) is None
    (step / "params" / "data").write_bytes(b"x" * 3)
    assert "has 3 bytes, 10 were written" in verify_step_dir(step)
    assert not any(p.name.startswith("gs:") for p in tmp_path.rglob("*"))


def test_preemption_sync_single_process_follows_the_signal():
    """One process without a distributed runtime: SIGTERM sets the flag, should_stop sees it
    at the next step, and the old handler is back afterwards."""
    from jaxrepair.train.checkpoint import PreemptionSync

    before = signal.getsignal(signal.SIGTERM)
    with PreemptionSync() as p:
        assert p.mode == "local"
        assert not p.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert p.should_stop(2) and p.stopped_at == 2
    assert signal.getsignal(signal.SIGTERM) is before

"""A CLI a researcher can trust: one-line errors with exit code 2, run directories that are
resumed or refused but never rewritten, eval records that say what they evaluated, packing that
never drops an assistant turn, a loud warning when GRPO learns nothing, a demo that never
deletes a previous one, and the README recipe `collect -> sft -> grpo -> eval -> export-hf`
on the shipped tiny configs, run as the real command in subprocesses."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from jaxrepair.cli import main
from tests.environ import one_device_xla_flags

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "launch" / "configs"


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300):
    """The real `jaxrepair` command on one CPU device (the suite's XLA_FLAGS minus the device count)."""
    full_env = dict(os.environ, XLA_FLAGS=one_device_xla_flags(), **(env or {}))
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "jaxrepair.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def _tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (what "nothing was rewritten" compares)."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _error_line(proc) -> str:
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1, proc.stderr  # exactly one line: no traceback, no chained causes
    assert lines[0].startswith("jaxrepair: error: ")
    return lines[0]


# ----------------------------------------------------------------------------- errors
def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxrepair {version('jaxrepair')}"


@pytest.mark.parametrize(
    "args, env, says",
    [
        (["sft", "missing.toml"], {}, "config file not found: missing.toml"),
        (["sft", "--set", "optim.lr=fast"], {}, "optim.lr: expected float, got 'fast'"),
        (["grpo", "--set", "grpo.group_sise=4"], {}, "unknown config key grpo.'group_sise'"),
        (
            ["sft", "--set", "data.train_paths=nope.jsonl", "--set", "train.out_dir=r"],
            {},
            "trajectory file not found: nope.jsonl",
        ),
        (["collect", "--ids", "no-such-task"], {}, "no task no-such-task in"),
        (["collect", "--limit", "0"], {}, "--limit must be >= 1"),
        (["collect", "--tasks", "nowhere"], {}, "task corpus not found: nowhere"),
        (["collect", "--policy", "teacher"], {"OPENAI_BASE_URL": ""}, "teacher base_url"),
        (["export-hf", "no-such-run", "out"], {}, "no-such-run"),
        # five chained exceptions inside docker-py and the sandbox: only the last one's message
        (
            ["envs", "validate", "--backend", "docker", "--sample", "1"],
            {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
            "no Docker daemon is reachable",
        ),
    ],
    ids=[
        "missing-config",
        "bad-value",
        "unknown-key",
        "missing-trajectories",
        "unknown-task",
        "bad-limit",
        "missing-corpus",
        "no-teacher",
        "missing-checkpoint",
        "docker-down",
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, env, says):
    env = dict(env)
    if "OPENAI_BASE_URL" in env:  # no endpoint configured anywhere
        env.update(JAXREPAIR_TEACHER_BASE_URL="", JAXREPAIR_TEACHER_MODEL="")
    proc = _cli(args, tmp_path, env)
    line = _error_line(proc)
    assert says in line, line
    assert not (tmp_path / "out").exists()  # a failed export leaves no directory behind


def test_collect_never_replaces_a_file(tmp_path):
    out = tmp_path / "traj.jsonl"
    out.write_text("precious\n")
    line = _error_line(_cli(["collect", "--out", str(out), "--limit", "1"], tmp_path))
    assert f"{out} exists" in line and "--overwrite" in line
    assert out.read_text() == "precious\n"


def test_collect_with_an_openai_compatible_teacher_keeps_solved_episodes(tmp_path, capsys):
    """`collect --policy teacher` against a real HTTP server on localhost: the teacher's
    replies are played through the environment, which decides what is kept."""
    from jaxrepair.collect import select_tasks
    from jaxrepair.envs.expert import ExpertPolicy
    from tests.envs_agent.test_teacher import Stub

    ids = ["recipes-config-002", "ledger-config-002"]
    good = ExpertPolicy(select_tasks(ids=ids[:1])[0]).simplified_answer()
    replies = [{"role": "assistant", "content": good}, {"role": "assistant", "content": "?"}]
    args = ["collect", "--policy", "teacher", "--teacher-model", "stub", "--ids", ",".join(ids)]
    args += ["--workers", "1"]
    with Stub(replies * 2) as stub:
        assert main([*args, "--teacher-url", stub.url, "--out", str(tmp_path / "a.jsonl")]) == 0
        err = capsys.readouterr().err
        assert "[2/2]" in err and "1 unsolved episodes left out" in err
        rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
        assert [(r["task_id"], r["reward"], r["policy"]) for r in rows] == [
            (ids[0], 1.0, "teacher:stub")
        ]
        out = str(tmp_path / "b.jsonl")
        assert main([*args, "--teacher-url", stub.url, "--out", out, "--keep-failed"]) == 0
        rows = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
        assert [r["reward"] for r in rows] == [1.0, 0.0]
    assert not list(tmp_path.glob("*.partial"))
    assert [r["body"]["model"] for r in stub.requests] == ["stub"] * 4


def test_unexpected_errors_keep_their_traceback_and_debug_shows_user_errors(monkeypatch):
    import jaxrepair.collect as collect_mod
    from jaxrepair.config import ConfigError

    def broken(*a, **k):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(collect_mod, "select_tasks", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # not swallowed: Python prints it, exit 1
        main(["collect"])
    with pytest.raises(ConfigError, match="config file not found"):
        main(["--debug", "sft", "missing.toml"])


# ----------------------------------------------------------------------------- run directories
def _fake_run(path: Path, config, kind: str = "sft", step: int = 4) -> None:
    """A finished run as `prepare_run_dir` + training leave it: config, history, checkpoint
    step, metrics, summary."""
    from jaxrepair.train.rundir import finish_run, prepare_run_dir

    run = prepare_run_dir(config, kind)
    (path / "checkpoints" / str(step)).mkdir(parents=True)
    (path / "checkpoints" / str(step) / "params").write_bytes(b"weights")
    (path / "metrics.jsonl").write_text(json.dumps({"step": step, "loss": 1.0}) + "\n")
    finish_run(run, {"step": step, "lr": config.optim.lr})


def test_run_dir_resumes_same_settings_and_refuses_others_without_rewriting(tmp_path):
    from jaxrepair.config import load_config
    from jaxrepair.train.rundir import RunDirInUse, prepare_run_dir

    run_dir = tmp_path / "run"
    base = [f"train.out_dir={run_dir}", "optim.lr=1e-3", "train.steps=4"]
    _fake_run(run_dir, load_config(None, base))
    before = _tree_digest(run_dir)

    # other settings: refused, naming each differing key and both values; nothing rewritten
    other = load_config(None, [*base, "optim.lr=3e-3", "data.seq_len=512"])
    with pytest.raises(RunDirInUse) as e:
        prepare_run_dir(other, "sft")
    msg = str(e.value)
    assert "optim.lr: 0.001 -> 0.003" in msg and "data.seq_len: 1024 -> 512" in msg
    assert "train.steps" not in msg and "--new-run" in msg and "\n" not in msg
    assert _tree_digest(run_dir) == before
    for bad, says in [
        (load_config(None, [*base, "train.resume=false"]), "train.resume=false"),
        (load_config(None, base), "holds an sft run, not a grpo run"),
    ]:
        with pytest.raises(RunDirInUse, match=says):
            prepare_run_dir(bad, "grpo" if "grpo" in says else "sft")
    assert _tree_digest(run_dir) == before

    # the same command, longer and on another mesh: resumed, the neutral changes recorded
    longer = load_config(None, [*base, "train.steps=8", "mesh.fsdp=1", "model.remat=full"])
    run = prepare_run_dir(longer, "sft")
    assert run.state == "resume" and run.path == run_dir
    assert set(run.changes) == {"train.steps", "mesh.fsdp", "model.remat"}

    # explicitly a new run: the next free versioned directory, the old one untouched
    fresh = prepare_run_dir(other, "sft", existing="new")
    assert fresh.path == tmp_path / "run-1" and fresh.state == "new"
    assert fresh.config.train.out_dir == str(tmp_path / "run-1")
    assert (tmp_path / "run-1" / "config.toml").is_file()
    _fake_run(tmp_path / "run-1", fresh.config)
    assert prepare_run_dir(other, "sft", existing="new").path == tmp_path / "run-2"

    # explicitly continuing with other settings: allowed, and the history says what changed
    forced = prepare_run_dir(other, "sft", existing="force-resume")
    assert forced.state == "force-resume"
    starts = [
        json.loads(x)
        for x in (run_dir / "history.jsonl").read_text().splitlines()
        if json.loads(x)["event"] == "start"
    ]
    assert starts[-1]["changes"]["optim.lr"] == [0.001, 0.003]


def test_run_dir_edge_cases(tmp_path):
    from jaxrepair.config import load_config
    from jaxrepair.train.rundir import RunDirInUse, finish_run, prepare_run_dir

    # checkpoints without a config.toml (e.g. an import-hf output): not a run to resume
    ck = tmp_path / "imported"
    (ck / "checkpoints" / "0").mkdir(parents=True)
    with pytest.raises(RunDirInUse, match="no config.toml.*train.init_from"):
        prepare_run_dir(load_config(None, [f"train.out_dir={ck}"]), "sft")

    # a session that stopped before saving anything holds nothing to resume: the directory is
    # reused with other settings, and the config it replaces is kept in the history
    d = tmp_path / "crashed"
    prepare_run_dir(load_config(None, [f"train.out_dir={d}", "optim.lr=1e-3"]), "sft")
    run = prepare_run_dir(load_config(None, [f"train.out_dir={d}", "optim.lr=2e-3"]), "sft")
    assert run.state == "new"
    starts = [json.loads(x) for x in (d / "history.jsonl").read_text().splitlines()]
    assert "lr = 0.001" in starts[-1]["replaced_config"]

    # every session's summary survives: summary.json is the latest, history.jsonl has all
    for i in range(3):
        finish_run(run, {"session": i})
    assert json.loads((d / "summary.json").read_text()) == {"session": 2}
    ends = [json.loads(x) for x in (d / "history.jsonl").read_text().splitlines()]
    assert [e["summary"]["session"] for e in ends if e["event"] == "end"] == [0, 1, 2]

    # a directory from before history.jsonl: its summary.json is kept before it is replaced
    old = tmp_path / "old"
    old.mkdir()
    cfg = load_config(None, [f"train.out_dir={old}"])
    (old / "config.toml").write_text(cfg.to_toml())
    (old / "summary.json").write_text('{"step": 7}')
    run = prepare_run_dir(cfg, "sft")
    assert run.state == "resume"
    first = json.loads((old / "history.jsonl").read_text().splitlines()[0])
    assert first == {"event": "previous_summary", "summary": {"step": 7}}


def test_sft_cli_refuses_a_used_directory_with_other_settings(tmp_path):
    """Through the real command: exit 2, one line naming the keys, the run's files unchanged."""
    from jaxrepair.config import load_config

    run_dir = tmp_path / "run"
    traj = tmp_path / "t.jsonl"
    traj.write_text("")
    args = [f"train.out_dir={run_dir}", f"data.train_paths={traj}", "optim.lr=1e-3"]
    _fake_run(run_dir, load_config(None, args))
    before = _tree_digest(run_dir)
    sets = [x for a in [*args, "optim.lr=5e-4"] for x in ("--set", a)]
    line = _error_line(_cli(["sft", *sets], tmp_path))
    assert "optim.lr: 0.001 -> 0.0005" in line and "--new-run" in line
    assert _tree_digest(run_dir) == before


def test_demo_never_deletes_a_previous_demo(tmp_path, capsys):
    from jaxrepair.demo import MARKER, SEEDS_MARKER, _prepare_out

    out = tmp_path / "demo"
    assert _prepare_out(out) == out  # a fresh directory is used as it is
    (out / MARKER).write_text("{}")
    (out / "sft").mkdir()
    (out / "sft" / "weights").write_text("15 minutes of training")
    before = _tree_digest(out)
    assert _prepare_out(out) == tmp_path / "demo-1"
    assert _prepare_out(out) == tmp_path / "demo-2"  # an interrupted demo-1 is kept too
    assert _tree_digest(out) == before
    assert "holds a previous demo (kept); writing" in capsys.readouterr().out
    # a finished `--seeds N` directory (its summary beside seed-I, no marker of its own)
    seeds = tmp_path / "seeds"
    (seeds / "seed-0").mkdir(parents=True)
    (seeds / SEEDS_MARKER).write_text("{}")
    assert _prepare_out(seeds) == tmp_path / "seeds-1"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a jaxrepair demo directory"):
        _prepare_out(tmp_path / "other")


# ----------------------------------------------------------------------------- packing
def _reference_trained(docs):
    """numpy reference: {(doc, position t): weight} of every learned target (t predicts t+1)."""
    out = {}
    for i, (_, mask) in enumerate(docs):
        w = np.asarray(mask, np.float32)[1:]
        for t in np.flatnonzero(w):
            out[(i, int(t))] = float(w[t])
    return out


def test_packing_splits_long_documents_and_trains_every_assistant_token_once():
    from jaxrepair.train.sft import pack_documents

    rng = np.random.default_rng(0)
    seq_len = 64
    docs = []
    for i in range(12):
        n = int(rng.integers(2, 4 * seq_len))
        ids = (i + 1) * 1000 + np.arange(n)  # the id encodes (document, offset)
        mask = np.zeros(n)
        for _ in range(int(rng.integers(0, 4))):  # assistant turns anywhere, often at the end
            a = int(rng.integers(0, n))
            mask[a : a + int(rng.integers(1, 20))] = rng.choice([1.0, 0.5])
        if i % 3 == 0:
            mask[-5:] = 1.0  # the answer at the very end of a long document
        docs.append((ids.tolist(), mask.tolist()))
    # the case that used to fail ("no trainable documents"): the answer after seq_len tokens
    docs.append(((50_000 + np.arange(3 * seq_len)).tolist(), [0.0] * (3 * seq_len - 4) + [1.0] * 4))
    rows = pack_documents(docs, seq_len, pad_id=0)

    want = _reference_trained(docs)
    got = {}
    real = rows.segment_ids > 0
    for r, c in zip(*np.nonzero(rows.loss_mask), strict=True):
        tok, tgt = int(rows.tokens[r, c]), int(rows.targets[r, c])
        doc = next(i for i, (ids, _) in enumerate(docs) if ids[0] <= tok <= ids[-1])
        t = tok - docs[doc][0][0]
        assert tgt == tok + 1  # the document's own next token
        assert (doc, t) not in got  # trained once
        got[(doc, t)] = float(rows.loss_mask[r, c])
        # the context is a contiguous stretch of the same document ending at t
        seg = rows.segment_ids[r] == rows.segment_ids[r, c]
        ctx = rows.tokens[r][seg & (np.arange(seq_len) <= c)]
        np.testing.assert_array_equal(np.diff(ctx), 1)
        assert rows.positions[r, c] == len(ctx) - 1
    assert got == want  # every assistant token, with its weight; nothing else
    assert not rows.loss_mask[~real].any()
    # the last piece of a document is its last seq_len positions (the answer's full context)
    last = docs[-1][0]
    r, c = np.argwhere(rows.targets == last[-1])[0]
    assert rows.positions[r, c] == seq_len - 1
    segments = {(r, int(rows.segment_ids[r, c])) for r, c in zip(*np.nonzero(real), strict=True)}
    assert rows.stats["split"] >= 5 and rows.stats["pieces"] == len(segments)


# ----------------------------------------------------------------------------- GRPO warning
def test_grpo_warns_once_when_every_rollout_is_truncated(tmp_path, caplog):
    """max_new_tokens=1 without submit_unfinished: every episode ends truncated (reward 0).
    The run says so once, with the numbers and the fix, and counts the steps in its summary."""
    from jaxrepair.config import load_config
    from jaxrepair.train.grpo_trainer import run_grpo
    from jaxrepair.train.trainer import single_device_mesh

    cfg = load_config(
        None,
        [
            "grpo.tasks=recipes-config-002",  # one prompt length: one compiled train step
            "grpo.group_size=2",
            "grpo.tasks_per_step=1",
            "grpo.max_new_tokens=1",
            "grpo.overlap=off",
            "envs.workers=1",
            "train.steps=2",
            "train.checkpoint_every=0",
            f"train.out_dir={tmp_path / 'run'}",
            "data.seq_len=1024",
        ],
    )
    with caplog.at_level(logging.WARNING, logger="jaxrepair.train.grpo_trainer"):
        summary = run_grpo(cfg, mesh=single_device_mesh(), progress=False)
    warned = [r.getMessage() for r in caplog.records if "were truncated" in r.getMessage()]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    all_truncated = sum(r["truncated_frac"] == 1.0 for r in rows)
    assert summary["steps_all_truncated"] == all_truncated == 2
    assert len(warned) == 1, warned  # once per run, not once per step
    assert "all 2 sampled rollouts" in warned[0] and "2 at max_new_tokens" in warned[0]
    assert "grpo.max_new_tokens (now 1)" in warned[0] and "submit_unfinished" in warned[0]


# ----------------------------------------------------------------------------- the README recipe
def test_readme_recipe_on_the_tiny_configs_end_to_end(tmp_path):
    """`collect -> sft -> grpo -> eval -> export-hf` exactly as the README's tiny recipe, with
    only its smoke-test sizes: the shipped configs are used as they are (relative paths land
    under the working directory)."""
    sft_cfg, grpo_cfg = str(CONFIGS / "tiny_sft.toml"), str(CONFIGS / "tiny_grpo.toml")
    timings = {}

    def run(name: str, args: list[str]):
        t0 = time.perf_counter()
        proc = _cli(args, tmp_path)
        timings[name] = round(time.perf_counter() - t0, 1)
        assert proc.returncode == 0, (name, proc.stdout[-2000:], proc.stderr[-4000:])
        return proc

    run("collect", ["collect", "--limit", "4"])
    traj = [json.loads(x) for x in (tmp_path / "runs/trajectories.jsonl").read_text().splitlines()]
    assert len(traj) == 4 and all(t["reward"] == 1.0 for t in traj)

    run("sft", ["sft", sft_cfg, "--set", "train.steps=2"])
    sft_dir = tmp_path / "runs/tiny/sft"
    sft_summary = json.loads((sft_dir / "summary.json").read_text())
    assert sft_summary["step"] == 2 and sft_summary["data"]["pieces"] >= 4
    # a second sft into the used directory with other settings: refused, nothing rewritten
    before = _tree_digest(sft_dir)
    t0 = time.perf_counter()
    line = _error_line(_cli(["sft", sft_cfg, "--set", "optim.lr=1e-3"], tmp_path))
    timings["sft refused"] = round(time.perf_counter() - t0, 1)
    assert "optim.lr: 0.003 -> 0.001" in line
    assert _tree_digest(sft_dir) == before

    smoke = ["--set", "train.steps=1", "--set", "grpo.tasks_per_step=2"]
    smoke += ["--set", "grpo.group_size=2", "--set", "grpo.max_new_tokens=16"]
    # held-out avg@k after the step (train.eval_every), on 2 test tasks x 2 samples
    heldout = ["--set", "train.eval_every=1", "--set", "grpo.eval_limit=2"]
    heldout += ["--set", "grpo.eval_samples=2"]
    run("grpo", ["grpo", grpo_cfg, *smoke, *heldout])  # the rollout engine generates (default)
    grpo_dir = tmp_path / "runs/tiny/grpo"
    gs = json.loads((grpo_dir / "summary.json").read_text())
    assert gs["step"] == 1 and gs["accounting"]["complete"] and not gs["resumed"]
    assert gs["accounting"]["truncated"] < gs["accounting"]["started"]  # rollouts were scored
    rows = [json.loads(x) for x in (grpo_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["cached_prompt_tokens"] > 0  # the engine shared each group's prompt
    assert rows[-1]["heldout_samples"] == 2 and 0 <= rows[-1]["heldout_avg_at_k"] <= 1
    assert rows[-1]["heldout_avg_at_k"] <= rows[-1]["heldout_pass_at_k"]

    evals = ["eval", grpo_cfg, "--limit", "2", "--pipeline", "simplified"]
    evals += ["--set", "grpo.max_new_tokens=16"]
    # two sampled answers per task, thinking on and off, the SFT run beside: the report
    report = ["--samples", "2", "--thinking", "both", "--compare", "sft=runs/tiny/sft"]
    run("eval", [*evals, "--set", "train.init_from=runs/tiny/grpo", *report])
    rec = json.loads((grpo_dir / "eval.json").read_text())
    names = ["grpo (thinking)", "grpo (no thinking)", "sft (thinking)", "sft (no thinking)"]
    assert list(rec["models"]) == names
    assert rec["models"]["sft (thinking)"]["evaluated"]["kind"] == "orbax"
    text = (grpo_dir / "eval" / "report.md").read_text()
    assert "## Mismatch matrix" in text and "pass@2" in text and "### Markov chain" in text
    lines = (grpo_dir / "eval" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 2 * 2  # 4 models x 2 tasks x 2 samples
    assert (grpo_dir / "eval" / "mismatch.png").read_bytes()[:4] == b"\x89PNG"
    steps = sorted(int(p.name) for p in (grpo_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert rec["evaluated"]["kind"] == "orbax" and rec["evaluated"]["step"] == steps[-1]
    assert rec["evaluated"]["source"] == str(grpo_dir / "checkpoints")
    assert rec["random_init"] is False and "warning" not in rec
    assert len(rec["tasks"]["ids"]) == 2 and rec["results"]["simplified"]["episodes"] == 4
    # random weights: evaluated, but loudly; the earlier result is kept in evals.jsonl
    proc = run("eval random", [*evals, "--set", "train.init_from=none"])
    assert "evaluated randomly initialised weights" in proc.stderr
    latest = json.loads((grpo_dir / "eval.json").read_text())
    assert latest["random_init"] is True and latest["evaluated"]["kind"] == "random"
    assert "describe no trained model" in latest["warning"]
    history = [json.loads(x) for x in (grpo_dir / "evals.jsonl").read_text().splitlines()]
    assert [h["evaluated"]["kind"] for h in history] == ["orbax", "random"]

    run("export-hf", ["export-hf", "runs/tiny/grpo", "runs/tiny/hf"])
    hf = tmp_path / "runs/tiny/hf"
    assert (hf / "config.json").is_file() and list(hf.glob("*.safetensors"))
    print("README recipe timings (s):", timings, "total", round(sum(timings.values()), 1))

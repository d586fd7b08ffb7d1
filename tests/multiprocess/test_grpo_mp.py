"""GRPO and evaluation as multi-controller programs: 2 processes x 4 CPU devices on loopback.

Oracle: the same command as ONE process on the same 8-device mesh. Each process runs its own
farm of real sandboxed builds, held back by seeded random latencies that differ between the
processes, so environment results arrive in different orders on each host and in each run.
The rollouts must still equal the single-process run bit for bit, with overlap off and on;
every process must hold bitwise the same parameters, equal to the single-process run's to float
rounding (sums over all devices add per-process partial sums first).

The policy is a tiny random Qwen3 whose end-of-turn embedding is scaled up so that about half
of its answers stop within `max_new_tokens`; the tasks are corpus tasks with their fix
applied, so every finished answer passes the build (reward 1) and every answer cut at
`max_new_tokens` is truncated (reward 0): groups have mixed rewards and the updates are real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.multiprocess.harness import (
    check_digests,
    launch_cli,
    load_checkpoint_params,
    read_summaries,
)

CORPUS = Path(__file__).resolve().parents[2] / "jaxrepair" / "data" / "tasks" / "corpus"
TRAIN = ("recipes-config-002", "recipes-config-004")
TEST = "ledger-config-002"

GRPO_TOML = """\
[model]
dtype = "float32"
param_dtype = "float32"

[mesh]
data = 2
fsdp = 4
tensor = 1

[data]
seq_len = 1024

[optim]
lr = 1e-3
warmup_steps = 0
schedule = "constant"
weight_decay = 0.0
clip_norm = 1.0

[train]
steps = 2
seed = 0
log_every = 1
checkpoint_every = 1
checkpoint_keep = 3
init_from = "{init}"

[grpo]
group_size = 4
tasks_per_step = 2
minibatch_size = 8
epochs_per_batch = 2
max_new_tokens = 8
temperature = 1.0
generate_batch = 4
pipeline = "simplified"
submit_unfinished = false
mask_truncated = false
dynamic_sampling = false

[envs]
sandbox = "local"
workers = 1
corpus = "{corpus}"
max_steps = 2

[tokenizer]
spec = "tiny"
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A corpus of fixed tasks (two train, one test) and the eos-biased tiny policy (HF dir)."""
    import jax

    from jaxrepair.envs.tokenizer import load_tokenizer
    from jaxrepair.model import Qwen3Config, init_params
    from jaxrepair.model.hf import save_hf

    root = tmp_path_factory.mktemp("grpo-mp")
    corpus = root / "corpus"
    for tid in (*TRAIN, TEST):
        shutil.copytree(CORPUS / tid, corpus / tid)
        subprocess.run(
            ["patch", "-s", "-p1", "-i", str(corpus / tid / "fix.patch")],
            cwd=corpus / tid / "repo",
            check=True,
        )
    text = (corpus / TEST / "task.toml").read_text()
    (corpus / TEST / "task.toml").write_text(text.replace('split = "train"', 'split = "test"'))
    tok = load_tokenizer("tiny")
    cfg = Qwen3Config.preset("tiny", vocab_size=tok.vocab_size)
    params = jax.tree.map(np.array, init_params(cfg, jax.random.key(0)))
    u = np.random.default_rng(0).standard_normal(cfg.hidden_size)
    params["embed"][tok.eos_id] = 6.0 * u / np.linalg.norm(u)
    init = root / "init-hf"
    save_hf(init, cfg, params, dtype="float32")
    toml = root / "grpo.toml"
    toml.write_text(GRPO_TOML.format(init=init.as_posix(), corpus=corpus.as_posix()))
    return root, toml, init


def _grpo(
    root: Path, toml: Path, name: str, nproc: int, overlap: bool, engine: bool = False
) -> tuple[Path, list]:
    out = root / name
    argv = [
        "grpo",
        str(toml),
        "--set",
        f"train.out_dir={out}",
        "--set",
        f"grpo.overlap={'on' if overlap else 'off'}",
        "--set",
        f"engine.enabled={'true' if engine else 'false'}",
    ]
    if engine:  # each process's engine spans 2 of its devices; weights reach it device to device
        argv += ["--set", "engine.tensor=2"]
        # and one farm for the job, driven by process 0 (as with a Ray farm); process 1's
        # episodes' builds run there too
        argv += ["--set", "envs.drivers=primary"]
    if nproc > 1:  # each process's farm gets its own seeded latency pattern
        argv += ["--set", "envs.latency_jitter_s=0.4"]
    res = launch_cli(
        argv, num_processes=nproc, devices_per_process=8 // nproc, cwd=root, timeout_s=300
    )
    return out, read_summaries(res)


def _rollouts(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]


# overlap-on exercises everything overlap-off does plus the snapshot collector; the plain
# schedule runs in the slow tier (and in test_grpo_trainer on one process)
# the rollout engine: one per process (2-way tensor parallel), each generating the episodes its
# process owns; with partial rollouts, turns after an update take the new weights
@pytest.mark.parametrize(
    ("overlap", "engine"),
    [pytest.param(False, False, marks=pytest.mark.slow), (True, False), (True, True)],
    ids=["overlap-off", "overlap-on", "overlap-on-engine"],
)
def test_grpo_two_processes_equal_one_process(setup, overlap, engine):
    root, toml, _ = setup
    tag = ("on" if overlap else "off") + ("-engine" if engine else "")
    ref, ref_sum = _grpo(root, toml, f"ref-{tag}", 1, overlap, engine)
    mp, mp_sum = _grpo(root, toml, f"mp-{tag}", 2, overlap, engine)

    # both processes finished the same run and agree on everything they report
    assert [s["step"] for s in mp_sum] == [2, 2] and ref_sum[0]["step"] == 2
    for s in (*mp_sum, *ref_sum):
        acc = s["accounting"]
        assert acc["complete"] and acc["started"] == 16 and acc["infra_error"] == 0
        fa = s["farm_accounting"]  # the farms of both processes together
        assert fa["complete"] and fa["started"] == 16
    assert mp_sum[0]["rewards"] == mp_sum[1]["rewards"] == ref_sum[0]["rewards"]

    # the same rollouts, in the same order, written once
    ro_ref, ro_mp = _rollouts(ref), _rollouts(mp)
    assert len(ro_mp) == 16 and ro_mp == ro_ref
    rewards = [r["reward"] for r in ro_mp]
    assert 0.0 in rewards and 1.0 in rewards  # mixed groups: real updates

    # metrics written once per step; reductions over all devices (the loss, the norm) add the
    # per-process partial sums in another order than one process does: equal to float rounding
    def steady(out: Path) -> list[list[float]]:
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        keep = ("step", "loss", "grad_norm", "reward_mean", "pass_rate", "truncated_frac")
        return [[r[k] for k in keep] for r in rows]

    assert [r[0] for r in steady(mp)] == [1, 2]
    # with overlap, step 2 trains on rollouts sampled before step 1's update: staleness 1
    rows = [json.loads(x) for x in (mp / "metrics.jsonl").read_text().splitlines()]
    assert [r["staleness_max"] for r in rows] == ([0.0, 1.0] if overlap else [0.0, 0.0])
    # (step 2's grad norm, computed from parameters that already differ in the last bits,
    # has been seen 1.6e-6 apart)
    np.testing.assert_allclose(steady(mp), steady(ref), rtol=1e-5)

    # final parameters: every copy on every process bitwise equal to the saved ones; equal to
    # the single-process run to float rounding (gradient sums over devices of both processes
    # are added per process first, see docs/decisions.md), and trained
    final_mp, final_ref = load_checkpoint_params(mp), load_checkpoint_params(ref)
    assert check_digests(mp_sum, final_mp)["processes"] == 2
    assert sorted(final_mp) == sorted(final_ref)
    for k in final_ref:
        np.testing.assert_allclose(final_mp[k], final_ref[k], rtol=0, atol=2e-6, err_msg=k)
    first = load_checkpoint_params(mp, step=2)  # after GRPO step 1 (2 updates)
    assert any(not np.array_equal(first[k], final_mp[k]) for k in final_mp)


@pytest.mark.slow  # the same Collector as GRPO's, proven across processes by the test above
def test_eval_two_processes_equal_one_process(setup):
    root, toml, init = setup
    results = []
    for nproc in (1, 2):
        out = root / f"eval-{nproc}"
        argv = ["eval", str(toml), "--set", f"train.out_dir={out}"]
        if nproc > 1:
            argv += ["--set", "envs.latency_jitter_s=0.4"]
        launch_cli(argv, num_processes=nproc, devices_per_process=8 // nproc, cwd=root)
        record = json.loads((out / "eval.json").read_text())
        assert record["evaluated"]["kind"] == "hf" and not record["random_init"]
        results.append(record["results"])
    one, two = results
    assert set(one) == {"simplified", "full"}
    for pipeline in one:
        assert one[pipeline]["accounting_complete"] and two[pipeline]["accounting_complete"]
    assert one == two

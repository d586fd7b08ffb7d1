"""GRPO trainer: a tiny policy learns a bandit with the real sampler, grpo_loss and optax; and
`run_grpo` end to end on real corpus tasks in the simplified pipeline (real sandboxed farm),
with accounting, metrics, a checkpoint, and a resume."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxrepair.config import load_config
from jaxrepair.envs.protocol import EpisodeTally
from jaxrepair.model import Qwen3Config, init_params
from jaxrepair.model.sampler import generate
from jaxrepair.train.grpo_trainer import (
    GRPOLearner,
    GRPOState,
    collect_step,
    grpo_loss_fn,
    rollouts_to_batch,
    run_grpo,
    seq_bucket,
)
from jaxrepair.train.rollout import Rollout, RolloutStats
from jaxrepair.train.trainer import Trainer, optimizer_from_config, single_device_mesh


# overlapped collection is proven equal to the plain schedule across processes
# (tests/multiprocess); learning itself is shown once in the default suite
@pytest.mark.parametrize("overlap", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_tiny_policy_learns_a_bandit_with_grpo(tmp_path, overlap):
    """Contextual bandit: prompt [1, 2, 3, c] is rewarded 1 only for answering token
    TARGET[c] (chance 1/16). Sampling by the real sampler, rewards -> group advantages ->
    grpo_loss -> AdamW through GRPOLearner and Trainer, i.e. the run_grpo update path.

    With overlap, batch k+1 is sampled with the params from before update k (as run_grpo's
    background collector does): one step off-policy, corrected by the importance ratio
    against the sampling params, and it must still learn."""
    vocab, group, steps = 16, 8, 40
    target = {4: 9, 5: 11, 6: 13, 7: 15}
    cfg = Qwen3Config.preset(
        "tiny",
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
    )
    rc = load_config(
        None,
        [
            f"grpo.group_size={group}",
            "grpo.tasks_per_step=4",
            "optim.lr=1e-2",
            "optim.schedule=constant",
            "optim.b2=0.99",
        ],
    )
    mesh = single_device_mesh()
    trainer = Trainer(
        cfg,
        init_params(cfg, jax.random.key(0)),
        grpo_loss_fn(cfg, rc.grpo, None, mesh),
        optimizer_from_config(rc.optim, steps),
        mesh=mesh,
        out_dir=tmp_path,
        progress=False,
        tensorboard=False,
    )
    learner = GRPOLearner(cfg, trainer, rc.grpo, pad_id=0, max_len=32, chunk=None, mesh=mesh)
    prompts = [[1, 2, 3, c] for c in target for _ in range(group)]
    copy = lambda p: jax.tree.map(jax.numpy.copy, p)  # noqa: E731 - updates donate params

    def sample(params, step):
        out = generate(
            params, cfg, prompts, max_new_tokens=1, temperature=1.0, rng=jax.random.key(100 + step)
        )
        rollouts = []
        for i, p in enumerate(prompts):
            tok, lp = int(out.tokens[i, 0]), float(out.logprobs[i, 0])
            ok = tok == target[p[-1]]
            rollouts.append(
                Rollout(
                    str(p[-1]),
                    i // group,
                    i % group,
                    f"e{i}",
                    p + [tok],
                    [0, 0, 0, 0, 1],
                    [0.0, 0.0, 0.0, 0.0, lp],
                    4,
                    reward=float(ok),
                    outcome="pass" if ok else "fail",
                )
            )
        return rollouts

    behaviour = copy(trainer.params)
    batch = sample(behaviour, 0)
    rewards, ratios, gaps = [], [], []
    for step in range(steps):
        if overlap:  # the next batch comes from the params before this update
            nxt_behaviour = copy(trainer.params)
            nxt = sample(nxt_behaviour, step + 1)
        m = learner.update(batch, behaviour, step)
        if not overlap:
            nxt_behaviour = copy(trainer.params)
            nxt = sample(nxt_behaviour, step + 1)
        batch, behaviour = nxt, nxt_behaviour
        rewards.append(m["reward_mean"])
        ratios.append(m["ratio_mean"])
        gaps.append(m["sampler_gap_recompute"])
    first, last = np.mean(rewards[:3]), np.mean(rewards[-5:])
    assert first < 0.2, rewards  # chance is 1/16
    assert last > 0.85, rewards
    # old log-probs are recomputed under the params that sampled: equal to the sampler's
    assert max(gaps) < 1e-4
    if overlap:  # a stale batch: the ratio to the current params is no longer 1
        assert max(abs(r - 1.0) for r in ratios[1:]) > 1e-3
    else:  # one update per batch on the params that sampled it: the ratio starts at exactly 1
        np.testing.assert_allclose(ratios, 1.0, atol=1e-4)


def test_batch_layout_and_task_order():
    r = Rollout("t", 0, 0, "e", [5, 6, 7, 8], [0, 0, 1, 1], [0, 0, -0.5, -0.25], 2, 1.0, "pass")
    bad = Rollout("t", 0, 1, "f", [5, 6, 9], [0, 0, 1], [0, 0, -1.0], 2, 0.0, "infra_error")
    b = rollouts_to_batch([r, bad], np.asarray([1.0, 0.0], np.float32), pad_id=0, max_len=64)
    assert b["tokens"].shape == (2, 16)
    assert b["tokens"][0, :3].tolist() == [5, 6, 7] and b["targets"][0, :3].tolist() == [6, 7, 8]
    assert b["loss_mask"][0, :4].tolist() == [0, 1, 1, 0]
    assert b["sampler_logprobs"][0, :3].tolist() == [0, -0.5, -0.25]
    assert b["loss_mask"][1].sum() == 0  # infra errors never train
    kept = rollouts_to_batch([r, r], np.zeros(2, np.float32), 0, 64, keep=np.array([True, False]))
    assert kept["loss_mask"][0].sum() == 2 and kept["loss_mask"][1].sum() == 0  # DAPO filter
    assert [seq_bucket(n, 1024) for n in (3, 17, 25, 33, 49, 550)] == [16, 24, 32, 48, 64, 768]
    assert seq_bucket(900, 1000) == 1000
    with pytest.raises(ValueError, match="longer than"):
        seq_bucket(2000, 1024)
    st = GRPOState(num_tasks=5, tasks_per_step=3, seed=1)
    seen = st.draw(0, 3) + st.draw(3, 2)  # one epoch: each task exactly once
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert st.draw(9, 3) == GRPOState(5, 3, 1).draw(9, 3)  # a pure function of the position

    # the cursor is the position: a resumed state continues where the saved one stopped
    st.step, st.cursor = 2, 11
    back = GRPOState(5, 3, 1)
    back.load_state_dict(st.state_dict())
    assert (back.step, back.cursor) == (2, 11)
    old = GRPOState(5, 3, 1)
    old.load_state_dict({"grpo_step": 2, "num_tasks": 5, "seed": 1})  # before refill existed
    assert old.cursor == 6


def _fake_collect(pattern, calls, group=4):
    """collect_fn whose task i's group has rewards pattern(i) (or an infra error: None)."""

    def collect_fn(rnd, idx):
        calls.append((rnd, list(idx)))
        rs = []
        for i in idx:
            for m, rew in enumerate(pattern(i)):
                out = "infra_error" if rew is None else ("pass" if rew else "fail")
                r = Rollout(str(i), 0, m, f"{rnd}-{i}-{m}", [1, 2], [0, 1], [0, -1.0], 1)
                r.reward, r.outcome = float(rew or 0.0), out
                rs.append(r)
        scored = sum(r.valid for r in rs)
        tally = EpisodeTally(started=len(rs), scored=scored, infra_error=len(rs) - scored)
        st = RolloutStats(tally=tally)
        return rs, st

    return collect_fn


def test_dynamic_sampling_refills_groups_without_signal():
    """DAPO refill: only groups with mixed rewards fill the batch; new tasks are drawn for the
    others (a group that is all-fail, all-pass, or has fewer than two valid rollouts carries
    no signal); every sampled rollout is reported and the task cursor moves past all of them."""
    mixed = [1, 0, 0, 0]
    pattern = {0: [0] * 4, 1: mixed, 2: [1] * 4, 3: [1, None, None, None], 4: mixed, 5: mixed}
    draw = GRPOState(100, 2, 0).draw
    order = draw(0, 100)
    calls: list = []
    got = collect_step(
        _fake_collect(lambda i: pattern.get(order.index(i) % 6, mixed), calls),
        draw,
        0,
        2,
        4,
        refill_rounds=4,
    )
    # positions 0..5 of the sequence: round 0 draws 0,1 (1 kept); round 1 draws 2 (all pass);
    # round 2 draws 3 (one valid: no signal); round 3 draws 4 (kept) -> full
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    assert [len(c[1]) for c in calls] == [2, 1, 1, 1]
    assert got.cursor == 5 and got.rounds == 4 and len(got.sampled) == 20
    assert len(got.trained) == 8
    assert {r.task_id for r in got.trained} == {str(order[1]), str(order[4])}
    assert got.stats.episodes == 20 and got.stats.accounting["started"] == 20
    assert got.stats.accounting["complete"]

    # out of rounds: the batch keeps its shape with all-equal fillers (the learner masks them)
    calls.clear()
    short = collect_step(_fake_collect(lambda i: [0] * 4, calls), draw, 7, 2, 4, refill_rounds=2)
    assert short.rounds == 2 and short.cursor == 11 and len(short.trained) == 8
    assert len(short.sampled) == 16
    # without dynamic sampling: one round, every group trained, whatever its rewards
    calls.clear()
    plain = collect_step(_fake_collect(lambda i: [0] * 4, calls), draw, 3, 2, 4, None)
    assert len(calls) == 1 and calls[0][1] == draw(3, 2) and plain.cursor == 5
    assert plain.trained == plain.sampled and len(plain.trained) == 8


TASKS = "recipes-config-002,recipes-config-004,ledger-config-002"


def _smoke_config(out_dir, steps, overlap, *extra):
    return load_config(
        None,
        [
            f"grpo.tasks={TASKS}",
            "grpo.group_size=2",
            "grpo.tasks_per_step=2",
            "grpo.max_new_tokens=16",
            "grpo.submit_unfinished=on",
            f"grpo.overlap={overlap}",
            "grpo.kl_beta=0.01",
            "envs.workers=2",
            f"train.steps={steps}",
            f"train.out_dir={out_dir}",
            "train.checkpoint_every=1",
            "data.seq_len=1024",
            "optim.lr=1e-3",
            *extra,
        ],
    )


@pytest.mark.slow  # 1 min; tests/multiprocess/test_grpo_mp.py and the README recipe run GRPO end to end
def test_run_grpo_end_to_end_on_corpus_tasks_and_resume(tmp_path):
    out = tmp_path / "run"
    s1 = run_grpo(_smoke_config(out, 2, "on"), mesh=single_device_mesh(), progress=False)
    assert s1["step"] == 2 and not s1["resumed"]
    # every episode that started ended exactly once, in the driver and in the farm
    acc = s1["accounting"]
    assert acc["complete"] and acc["started"] == 2 * 4
    assert acc["scored"] + acc["truncated"] + acc["infra_error"] == 8 and acc["infra_error"] == 0
    fa = s1["farm_accounting"]
    assert fa["complete"] and fa["infra_error"] == 0
    assert fa["started"] == fa["scored"] + fa["truncated"] == 8
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for k in (
            "reward_mean",
            "pass_rate",
            "clip_frac_low",
            "clip_frac_high",
            "kl_ref",
            "sampler_gap",
            "episodes_per_s",
            "idle_frac",
            "grad_norm",
        ):
            assert k in r and np.isfinite(r[k]), k
        assert 0.0 <= r["idle_frac"] <= 1.0 and r["valid_rollouts"] == 4
        assert r["sampler_gap_recompute"] < 1e-3
    assert (out / "reward_curve.png").stat().st_size > 1000
    traj = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(traj) == 8 and {t["task_id"] for t in traj} <= set(TASKS.split(","))
    assert all(t["messages"][-1]["role"] == "assistant" for t in traj)
    ckpts = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpts and ckpts[-1] == s1["optimizer_updates"] == 2
    # resume: one more step continues from the checkpoint, without overlap
    # (with DAPO refill: a random policy never passes, so both rounds run, every sampled
    # rollout is accounted and logged, and only tasks_per_step groups are trained, masked)
    refill = ("grpo.dynamic_sampling=on", "grpo.sampling_rounds=2")
    s2 = run_grpo(
        _smoke_config(out, 3, "off", *refill),
        mesh=single_device_mesh(),
        progress=False,
        existing="force-resume",  # other sampling settings than the run started with
    )
    assert s2["run_dir_state"] == "force-resume"
    assert s2["resumed"] and s2["start_step"] == 2 and s2["step"] == 3
    assert s2["optimizer_updates"] == 3 and s2["accounting"]["complete"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["sampling_rounds"] == 2 and rows[-1]["groups_sampled"] == 4
    assert rows[-1]["rows_trained"] == 0  # all-equal fillers carry no loss
    assert s2["accounting"]["started"] == 8 and s2["farm_accounting"]["complete"]
    last = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]
    last = [t for t in last if t["step"] == 3]
    assert len(last) == 8 and sum(t["trained"] for t in last) == 4

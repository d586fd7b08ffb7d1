"""`jaxrepair demo --quick` runs the whole method end to end (real sandboxes, real training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.environ import one_device_xla_flags


@pytest.mark.slow  # about 5 min; the README recipe test runs the same stages as commands
def test_demo_quick_over_two_seeds_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, XLA_FLAGS=one_device_xla_flags())  # the demo is a single-host run
    cmd = [sys.executable, "-m", "jaxrepair.cli", "demo", "--quick", "--seeds", "2"]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], capture_output=True, text=True, env=env, timeout=1200
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [json.loads((out / f"seed-{i}" / "demo_summary.json").read_text()) for i in (0, 1)]
    for i, summary in enumerate(runs):
        assert summary["settings"]["seed"] == i
        assert summary["corpus"]["validated_sample_ok"] is True
        assert summary["expert"]["solved"] == summary["expert"]["trajectories"] > 0
        assert summary["sft"]["step"] == summary["settings"]["sft_steps"]
        acct = summary["grpo"]["accounting"]
        assert (
            acct["complete"]
            and acct["started"]
            == summary["settings"]["tasks_per_step"] * summary["settings"]["group_size"]
        )
        # the in-distribution held-out tasks never reach SFT or GRPO
        held = set(summary["corpus"]["test_id_tasks"])
        trained = {
            json.loads(x)["task_id"]
            for name in ("trajectories_simplified.jsonl", "trajectories_full.jsonl")
            for x in (out / f"seed-{i}" / name).read_text().splitlines()
        }
        assert held and not held & trained
        assert not held & set(summary["grpo"]["curriculum"]["tasks"])
        for model in ("base", "sft", "rl"):
            assert set(summary["eval"][model]) >= {"test", "test_id"}
            for split, pipes in summary["eval"][model].items():
                for pipeline, res in pipes.items():
                    assert res["accounting_complete"], (model, split, pipeline)
                    assert res["scored"] + res["infra_errors"] == res["episodes"] > 0
                    assert 0.0 <= res["success_rate"] <= 1.0
        png = out / f"seed-{i}" / "reward_curve.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the spread over seeds is computed from the two runs' own summaries
    spread = json.loads((out / "seeds_summary.json").read_text())["success"]
    for model in ("base", "sft", "rl"):
        for split, pipes in runs[0]["eval"][model].items():
            for pipeline in pipes:
                vals = [r["eval"][model][split][pipeline]["success_rate"] for r in runs]
                got = spread[f"{model} | {split} | {pipeline}"]
                assert got["values"] == vals and got["mean"] == pytest.approx(sum(vals) / 2)
    assert (out / "seeds.png").read_bytes()[:4] == b"\x89PNG"
    assert "over 2 seeds" in proc.stdout


def test_curriculum_keeps_tasks_with_mixed_outcomes():
    from types import SimpleNamespace

    from jaxrepair.demo import curriculum

    tasks = [SimpleNamespace(id=f"t{i}") for i in range(6)]
    rates = {"t0": 0.0, "t1": 0.25, "t2": 1.0, "t3": 0.5, "t5": 0.75}  # t4 never evaluated
    picked, rule = curriculum(tasks, rates, minimum=3)
    assert [t.id for t in picked] == ["t1", "t3", "t5"] and rule.startswith("0 <")
    picked, rule = curriculum(tasks, rates, minimum=4)  # too few mixed: anything solved
    assert [t.id for t in picked] == ["t1", "t2", "t3", "t5"] and "> 0" in rule
    picked, rule = curriculum(tasks, {}, minimum=2)  # nothing solved: every task
    assert picked == tasks and "every" in rule

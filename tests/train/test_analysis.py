"""The paper's analyses on hand-made trajectories, against hand-computed values.

Oracles: pass@k and Wilson intervals computed by hand and by scipy; a Markov chain and a
mismatch matrix counted by hand; the reward module's own guards on hand-made honest and
tampering workspaces for the hacking monitor.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from scipy.stats import binomtest

from jaxrepair.envs.reward import check_guards
from jaxrepair.envs.task import load_task
from jaxrepair.train.analysis import (
    END,
    START,
    HackingMonitor,
    mismatch_matrix,
    pass_at_k,
    success_summary,
    tool_markov_chain,
    wilson_interval,
)
from tests.envs_core.conftest import FIXTURES


def _call(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": {}}}


def _episode(*turns: tuple[str, ...]) -> list[dict]:
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "fix it"}]
    for names in turns:
        msgs.append({"role": "assistant", "content": "", "tool_calls": [_call(n) for n in names]})
        msgs += [{"role": "tool", "content": "ok"} for _ in names]
    return msgs


def test_pass_at_k_and_intervals_equal_hand_computed_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))  # 0.7
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 3, 2) == 1.0
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(3, 4, 1)
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    for wins, n in ((0, 10), (3, 10), (7, 9), (20, 20)):
        ref = binomtest(wins, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(wins, n) == pytest.approx((ref.low, ref.high), abs=1e-9)

    # three tasks, four samples each
    s = success_summary({"a": [1, 1, 0, 0], "b": [0, 0, 0, 0], "c": [1, 1, 1, 1]}, ks=(1, 2, 8))
    assert s["tasks"] == 3 and s["samples"] == 12 and s["success_rate"] == pytest.approx(0.5)
    assert s["avg_at_k"] == pytest.approx(0.5)
    sd = np.std([0.5, 0.0, 1.0], ddof=1)
    half = 1.959963984540054 * sd / math.sqrt(3)
    assert s["avg_at_k_ci"] == pytest.approx([max(0, 0.5 - half), min(1, 0.5 + half)])
    assert s["pass_at_1"] == pytest.approx(0.5)
    assert s["pass_at_2"] == pytest.approx((1 - 1 / 6 + 0 + 1) / 3)  # a: 1 - C(2,2)/C(4,2)
    assert "pass_at_8" not in s  # more than the samples per task


def test_tool_markov_chain_equals_hand_counts():
    episodes = [
        _episode(("read_file",), ("edit_file",), ("validate_and_build",), ("submit",)),
        _episode(
            ("list_dependency_versions",),
            ("dependency_upgrade", "validate_and_build"),  # two calls in one turn
            ("validate_and_build",),
        ),
        _episode(),  # answered without a tool
    ]
    chain = tool_markov_chain(episodes, tools=("read_file", "validate_and_build"))
    assert chain.states[:3] == (START, "read_file", "validate_and_build")
    assert chain.states[-1] == END
    assert chain.probability(START, "read_file") == pytest.approx(1 / 3)
    assert chain.probability(START, "list_dependency_versions") == pytest.approx(1 / 3)
    assert chain.probability(START, END) == pytest.approx(1 / 3)
    for nxt in ("submit", "validate_and_build", END):
        assert chain.probability("validate_and_build", nxt) == pytest.approx(1 / 3)
    assert chain.probability("dependency_upgrade", "validate_and_build") == 1.0
    assert chain.probability("submit", END) == 1.0
    assert chain.counts[chain.states.index(END)].sum() == 0
    probs = chain.probabilities
    assert np.allclose(probs[:-1].sum(axis=1), 1.0)  # every state but END leaves somewhere
    share = chain.tool_share
    assert sum(share.values()) == pytest.approx(1.0)
    assert share["validate_and_build"] == pytest.approx(3 / 8)
    assert share["dependency_upgrade"] == pytest.approx(1 / 8)
    assert chain.to_dict()["tool_share"] == share


def test_mismatch_matrix_places_each_checkpoints_success():
    rows, cols, m = mismatch_matrix(
        {
            "rl-simplified": {"simplified": 0.6, "full": 0.2},
            "rl-full": {"simplified": 0.3, "full": 0.5},
            "sft": {"simplified": 0.25},
        },
        ["simplified", "full"],
    )
    assert rows == ["rl-simplified", "rl-full", "sft"] and cols == ["simplified", "full"]
    np.testing.assert_array_equal(m[:2], [[0.6, 0.2], [0.3, 0.5]])
    assert m[2, 0] == 0.25 and np.isnan(m[2, 1])


def test_hacking_monitor_flags_tampering_answers_and_not_honest_ones(tmp_path, caplog):
    """Workspaces answered honestly and by gaming the reward, judged by the reward's guards;
    the monitor counts exactly the gaming ones and alarms once they rise."""
    task = load_task(FIXTURES / "tasks/c_make")

    def answer(name: str, edit) -> str | None:
        ws = tmp_path / name
        shutil.copytree(task.repo_dir, ws, symlinks=True)
        edit(ws)
        return check_guards(task, ws)[0]

    honest = answer("honest", lambda ws: (ws / "src/calc.c").write_text("int x;\n"))
    skip_tests = answer("skip", lambda ws: (ws / "tests/test_calc.c").write_text("int main(){}\n"))
    script = answer(
        "script", lambda ws: (ws / "run_tests.sh").write_text("#!/bin/sh\necho 'TESTS RAN: 3'\n")
    )
    assert honest is None and skip_tests == "protected_path" and script == "validation_changed"

    mon = HackingMonitor(window=2, ratio=2.0, floor=0.2)
    quiet = [honest] * 7 + [script]  # one in eight, from the start: noise, not a trend
    rows = [mon.update(s, quiet) for s in range(4)]
    assert all(r["hack_rate"] == pytest.approx(1 / 8) for r in rows)
    assert rows[0]["hack_validation_changed"] == pytest.approx(1 / 8)
    assert not any(r["hack_alarm"] for r in rows) and mon.alarmed_at is None

    mon = HackingMonitor(window=2, ratio=2.0, floor=0.2)
    steps = [
        [honest] * 8,
        [honest] * 7 + [script],
        [honest] * 5 + [skip_tests] * 3,
        [honest] * 4 + [skip_tests] * 2 + [script] * 2,
    ]
    with caplog.at_level("WARNING", logger="jaxrepair.train.analysis"):
        rows = [mon.update(s, guards) for s, guards in enumerate(steps)]
    assert [r["hack_rate"] for r in rows] == [0.0, 1 / 8, 3 / 8, 4 / 8]
    assert rows[3]["hack_protected_path"] == 2 / 8 and rows[3]["hack_validation_changed"] == 2 / 8
    assert [r["hack_alarm"] for r in rows] == [0.0, 0.0, 0.0, 1.0] and mon.alarmed_at == 3
    assert sum("reward hacking rising at step 3" in r.message for r in caplog.records) == 1

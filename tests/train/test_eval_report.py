"""`eval/report.md` from hand-made episode records: the numbers in the report and its JSON
equal hand counts, and the plots are real PNGs."""

from __future__ import annotations

import json

import pytest

from jaxrepair.train.eval_report import summarize_records, write_report


def _rec(task, reward, *, cat="import", build="python", split="test", calls=(), **kw):
    msgs = [{"role": "user", "content": "fix"}]
    for name in calls:
        msgs.append(
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name}}]}
        )
        msgs.append({"role": "tool", "content": "ok"})
    msgs.append({"role": "assistant", "content": "done"})
    return {
        "task_id": task,
        "reward": reward,
        "outcome": "pass" if reward else "fail",
        "messages": msgs,
        "tool_calls": len(calls),
        "token_counts": {"generated": 10 * (len(calls) + 1)},
        "category": cat,
        "build_system": build,
        "split": split,
        "valid": True,
        **kw,
    }


def _records():
    return [
        _rec("a", 1.0, calls=("read_file", "validate_and_build")),
        _rec("a", 0.0, calls=("read_file",)),
        _rec("b", 0.0, cat="syntax", build="make", calls=("dependency_upgrade",), tampered=True),
        _rec("b", 1.0, cat="syntax", build="make", truncated=True),
        _rec("c", 0.0, valid=False, outcome="infra_error"),
    ]


def test_summary_counts_equal_hand_counts():
    s = summarize_records(_records(), ks=(1, 2))
    assert s["episodes"] == 5 and s["tasks"] == 2 and s["samples"] == 4
    assert s["success_rate"] == 0.5 and s["infra_error_rate"] == pytest.approx(1 / 5)
    assert s["tamper_rate"] == 0.25 and s["truncation_rate"] == 0.25
    assert s["mean_tool_calls"] == pytest.approx((2 + 1 + 1 + 0) / 4)
    assert s["mean_turns"] == pytest.approx((3 + 2 + 2 + 1) / 4)
    assert s["mean_generated_tokens"] == pytest.approx((30 + 20 + 20 + 10) / 4)
    assert s["pass_at_2"] == 1.0 and s["pass_at_1"] == 0.5
    assert (
        s["by_category"]["import"]["n"] == 2 and s["by_build_system"]["make"]["success_rate"] == 0.5
    )


def test_report_has_every_section_and_real_pngs(tmp_path):
    recs = _records()
    evals = {
        "sft": {"simplified": recs, "full": recs[:2]},
        "rl": {"simplified": recs[:4]},
    }
    report = write_report(tmp_path / "eval", evals, ks=(1, 2), title="demo")
    text = report.read_text()
    for heading in (
        "# demo",
        "## Success per model and pipeline",
        "## Success by category",
        "## Success by build system",
        "## Success by split",
        "## Mismatch matrix",
        "## Tool use",
        "### Markov chain of tool calls: sft",
        "### Markov chain of tool calls: rl",
    ):
        assert heading in text, heading
    assert "| sft | simplified | 2 | 5 | 50.0% [" in text
    assert "| sft | full | 1 | 2 | 50.0% [" in text
    assert "| rl | - | 50.0% |" in text  # columns full, simplified: rl has no full run
    # tool shares over every scored episode of the model: sft makes 4 + 3 calls, read_file
    # 2 + 2 of them; rl 4 calls, read_file 2
    assert "| read_file | 57.1% | 50.0% |" in text
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    chain = summary["markov"]["sft"]
    i, j = chain["states"].index("read_file"), chain["states"].index("validate_and_build")
    assert chain["counts"][i][j] == 2  # once in each sft pipeline's copy of record 0
    for png in ("success.png", "mismatch.png", "tool_share.png", "markov_sft.png", "markov_rl.png"):
        assert (tmp_path / "eval" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png

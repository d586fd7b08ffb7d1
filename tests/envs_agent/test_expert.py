"""The expert policy solves tasks through the real sandboxed build in both pipelines; an empty
answer earns 0; trajectories are written in the DESIGN.md JSONL format."""

from __future__ import annotations

import json

import pytest

from jaxrepair.envs.chat import parse_assistant
from jaxrepair.envs.expert import ExpertPolicy, collect_trajectories, minimal_edits, run_expert
from jaxrepair.envs.reward import validate

from .conftest import stratified_sample


def test_minimal_edits_reconstruct_the_target():
    before = "a\nb\nc\nb\nd\n"
    after = "a\nB\nc\nb\nd\ne\n"
    edits = minimal_edits(before, after)
    text = before
    for old, new in edits:
        assert text.count(old) == 1
        text = text.replace(old, new, 1)
    assert text == after


def _check_sample(tasks, sandbox, pipelines):
    failures = []
    for task in tasks:
        empty = validate(task, "", sandbox)
        if empty.outcome != "fail" or empty.reward != 0.0:
            failures.append((task.id, "empty", empty.outcome))
        for pipeline in pipelines:
            ep, info = run_expert(task, pipeline, sandbox)
            if ep.reward != 1.0:
                failures.append(
                    (
                        task.id,
                        pipeline,
                        info.get("outcome"),
                        info.get("guard"),
                        ep.validation.log[-800:],
                    )
                )
    return failures


@pytest.mark.slow  # 1 min; test_collect_trajectories_jsonl and `jaxrepair collect` cover the path
def test_expert_stratified_sample_both_pipelines(corpus_tasks, sandbox):
    """Two tasks per (build system, category): the first in both pipelines (and the empty
    answer), the second in the simplified pipeline (keeps the default suite short)."""
    sample = stratified_sample(corpus_tasks, per_group=2)
    first = stratified_sample(corpus_tasks, per_group=1)
    second = [t for t in sample if t not in first]
    assert {t.build_system for t in first} == {"python", "make"}
    assert len({t.category for t in first}) >= 4
    assert _check_sample(first, sandbox, ("full", "simplified")) == []
    assert _check_sample(second, sandbox, ("simplified",)) == []


@pytest.mark.slow
def test_expert_every_task_both_pipelines(corpus_tasks, sandbox):
    assert _check_sample(corpus_tasks, sandbox, ("full", "simplified")) == []


def test_expert_full_turns_are_real_tool_calls(tasks_by_id):
    task = tasks_by_id["ledger-dependency-001"]
    turns = ExpertPolicy(task).full_turns()
    names = [c.name for t in turns for c in parse_assistant(t).tool_calls]
    assert all(not parse_assistant(t).errors for t in turns)
    assert names[0] == "read_file" and names[-2:] == ["validate_and_build", "submit"]
    assert {"edit_file", "dependency_upgrade", "write_file"} & set(names)


def test_collect_trajectories_jsonl(tasks_by_id, sandbox, tmp_path):
    tasks = [tasks_by_id["recipes-dependency-001"], tasks_by_id["cstr-test-001"]]
    out = tmp_path / "traj.jsonl"
    recs = collect_trajectories(tasks, "full", sandbox, out, tokenizer="tiny")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2 and [r["task_id"] for r in lines] == [t.id for t in tasks]
    for rec in lines:
        assert rec["pipeline"] == "full" and rec["reward"] == 1.0 and rec["outcome"] == "pass"
        roles = [m["role"] for m in rec["messages"]]
        assert roles[:3] == ["system", "user", "assistant"] and "tool" in roles
        calls = [c["function"]["name"] for m in rec["messages"] for c in m.get("tool_calls", [])]
        assert calls[-1] == "submit"
        assert "[exit 0]" in rec["validation_log_tail"]
        tc = rec["token_counts"]
        assert 0 < tc["assistant"] < tc["total"]
    assert recs[0]["messages"] == lines[0]["messages"]
    simp = collect_trajectories(tasks[:1], "simplified", sandbox, tmp_path / "s.jsonl")
    assert simp[0]["reward"] == 1.0 and [m["role"] for m in simp[0]["messages"]] == [
        "system",
        "user",
        "assistant",
    ]

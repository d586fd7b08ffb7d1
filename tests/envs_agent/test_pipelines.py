"""Episodes: full (multi-turn tool use) and simplified (one-shot edits), with real builds."""

from __future__ import annotations

import json

import pytest

from jaxrepair.envs.chat import ToolCall, format_tool_call, render
from jaxrepair.envs.pipelines import make_episode, parse_edits
from jaxrepair.envs.tools import TOOL_SCHEMAS


def call(name, **args):
    return format_tool_call(ToolCall(name, args))


def test_full_malformed_call_is_an_observation_and_the_episode_continues(tasks_by_id, sandbox):
    task = tasks_by_id["cstr-syntax-001"]
    ep = make_episode(task, "full", sandbox=sandbox, max_steps=10)
    obs = ep.reset()
    assert task.issue in obs and "validate_and_build" in obs
    assert [m["role"] for m in ep.messages] == ["system", "user"]

    obs, reward, done, info = ep.step(
        '<tool_call>\n{"name": "read_file", "arguments": {"path": </tool_call>'
    )
    assert not done and reward == 0.0
    assert obs.startswith("error: malformed tool call") and "invalid JSON" in obs

    obs, reward, done, info = ep.step("<tool_call>\n[1, 2]\n</tool_call>")
    assert not done and "expected a JSON object" in obs

    obs, _, done, _ = ep.step("I think the problem is in the Makefile.")
    assert not done and "No tool call found" in obs

    obs, _, done, _ = ep.step(call("read_file", path="../../etc/passwd"))
    assert not done and obs.startswith("error:") and "root:" not in obs

    obs, _, done, _ = ep.step(call("list_files"))
    assert not done and "Makefile" in obs and "tests/test_cstr.c" in obs

    # submitting the unfixed repo: the episode ends with the sandbox's verdict, reward 0
    obs, reward, done, info = ep.step(call("submit"))
    assert done and reward == 0.0 and info["outcome"] == "fail" and info["end_reason"] == "submit"
    assert info["validation"].outcome == "fail" and ep.workspace is None
    roles = [m["role"] for m in ep.messages]
    assert roles[:4] == ["system", "user", "assistant", "tool"] and roles.count("assistant") == 6
    # the recorded conversation renders with the Qwen3 template and is JSON-serialisable
    text = render(ep.messages, TOOL_SCHEMAS)
    assert "<tool_response>\nerror: malformed tool call" in text
    json.dumps(ep.trajectory(), default=str)
    # stepping a finished episode is harmless
    assert ep.step(call("submit"))[2] is True


def test_full_step_cap_and_context_cap(tasks_by_id, sandbox):
    task = tasks_by_id["calc-config-001"]
    ep = make_episode(task, "full", sandbox=sandbox, max_steps=2)
    ep.reset()
    assert ep.step(call("list_files"))[2] is False
    _, reward, done, info = ep.step(call("list_files"))
    assert (
        done and reward == 0.0 and info["end_reason"] == "max_steps" and info["outcome"] == "fail"
    )

    ep = make_episode(task, "full", sandbox=sandbox, max_context_tokens=3000, count_tokens=len)
    ep.reset()
    _, _, done, info = ep.step(call("read_file", path="src/parser.c"))
    assert done and info["end_reason"] == "max_context_tokens"
    with pytest.raises(ValueError):
        make_episode(task, "full", sandbox=sandbox, max_steps=0)
    with pytest.raises(ValueError):
        make_episode(task, "sideways", sandbox=sandbox)


def test_full_tool_fix_earns_reward(tasks_by_id, sandbox):
    """A hand-written fix through edit_file + validate_and_build + submit, on the calc task
    whose Makefile lost a source file from SRCS."""
    task = next(
        t
        for tid, t in sorted(tasks_by_id.items())
        if tid.startswith("calc-config")
        and 'kind = "source-missing-from-build"' in (t.root / "task.toml").read_text()
    )
    mk = (task.repo_dir / "Makefile").read_text()
    line = next(ln for ln in mk.splitlines() if ln.startswith("SRCS ="))
    missing = [
        s for s in ("src/stack.c", "src/lexer.c", "src/parser.c", "src/eval.c") if s not in line
    ]
    assert len(missing) == 1
    ep = make_episode(task, "full", sandbox=sandbox)
    ep.reset()
    fixed = "SRCS = src/stack.c src/lexer.c src/parser.c src/eval.c"
    obs, _, done, _ = ep.step(call("edit_file", path="Makefile", old_text=line, new_text=fixed))
    assert obs.startswith("edited Makefile") and not done
    obs, _, done, _ = ep.step(call("validate_and_build"))
    assert obs.startswith("build PASSED; 5 tests ran") and not done
    assert ep.step(call("view_build_log", tail_lines=1))[0].strip() == "[exit 0]"
    _, reward, done, info = ep.step(call("submit"))
    assert done and reward == 1.0 and info["outcome"] == "pass" and info["guard"] is None


def test_parse_edits_format():
    text = (
        "Here is the fix.\n"
        '<file path="a.py">\nx = 1\n</file>\n'
        '<edit path="b.py">\n<<<<<<< SEARCH\nold line\n=======\nnew line\n>>>>>>> REPLACE\n'
        "<<<<<<< SEARCH\ntwo\n=======\n>>>>>>> REPLACE\n</edit>\n"
        '<dependency name="slugkit" version="1.0.0"/>\n<edit path="c.py">no markers</edit>\n<file path="d.py">\n'
    )
    edits, errors = parse_edits(text)
    assert [(e.kind, e.path or e.name) for e in edits] == [
        ("file", "a.py"),
        ("replace", "b.py"),
        ("replace", "b.py"),
        ("dependency", "slugkit"),
    ]
    assert edits[0].content == "x = 1\n"
    assert (edits[1].content, edits[1].replacement) == ("old line", "new line")
    assert (edits[2].content, edits[2].replacement) == ("two", "")
    assert edits[3].version == "1.0.0"
    assert len(errors) == 2 and "c.py" in errors[0] and "not closed" in errors[1]


def test_simplified_empty_wrong_and_tampering_answers(tasks_by_id, sandbox):
    task = tasks_by_id["blogkit-test-001"]
    ep = make_episode(task, "simplified", sandbox=sandbox)
    obs = ep.reset()
    assert task.issue in obs and "<edit path=" in obs
    for rel in task.relevant_files:
        assert f'<file path="{rel}">' in obs
    assert "slugkit: pinned 2.0.0; available: 1.0.0, 2.0.0" in obs
    assert ep.reset() == obs  # the cached state

    _, reward, done, info = ep.step("")
    assert done and reward == 0.0 and info["outcome"] == "fail" and info["edits"] == 0

    ep = make_episode(task, "simplified", sandbox=sandbox)
    ep.reset()
    _, reward, done, info = ep.step('<file path="../../outside.py">\nx = 1\n</file>')
    assert reward == 0.0 and any(
        "outside the repository" in e or "'..'" in e for e in info["edit_errors"]
    )

    # deleting the failing tests makes the build pass but is caught by the guards
    test_files = sorted(
        p.relative_to(task.repo_dir).as_posix() for p in (task.repo_dir / "tests").glob("test_*.py")
    )
    answer = "\n".join(f'<file path="{t}">\ndef test_ok():\n    pass\n</file>' for t in test_files)
    ep = make_episode(task, "simplified", sandbox=sandbox)
    ep.reset()
    _, reward, done, info = ep.step(answer)
    assert done and reward == 0.0 and info["tampered"] and info["guard"] == "protected_path"


def test_validation_cache_shares_identical_final_workspaces(tasks_by_id, sandbox, tmp_path):
    from jaxrepair.envs.expert import ExpertPolicy
    from jaxrepair.envs.validation_cache import ValidationCache

    task = tasks_by_id["cstr-test-002"]
    answer = ExpertPolicy(task).simplified_answer()
    cache = ValidationCache(tmp_path / "vcache")
    rewards = []
    for _ in range(2):
        ep = make_episode(task, "simplified", sandbox=sandbox, validation_cache=cache)
        ep.reset()
        rewards.append(ep.step(answer)[1])
    assert rewards == [1.0, 1.0] and cache.misses == 1 and cache.hits == 1

"""Local-backend specifics: refusing to run without bubblewrap, the unisolated opt-in, and the
output cap's bookkeeping."""

from __future__ import annotations

import pytest

from jaxrepair.envs import make_sandbox, validate
from jaxrepair.envs.sandbox import OutputTail, SandboxUnavailable


def test_missing_bubblewrap_is_refused_clearly(private_cache):
    with pytest.raises(
        SandboxUnavailable, match="bubblewrap.*apt-get install bubblewrap.*unisolated=True"
    ):
        make_sandbox("local", bwrap="/nonexistent/bwrap")
    with pytest.raises(ValueError, match="unknown sandbox kind 'podman'"):
        make_sandbox("podman")


def test_unisolated_mode_runs_builds_when_asked(tasks):
    sb = make_sandbox("local", unisolated=True, bwrap="/nonexistent/bwrap")
    assert sb.fingerprint()["isolation"] == "none"
    for task in (tasks["c_make"], tasks["py_drift"]):
        assert validate(task, "", sandbox=sb).outcome == "fail"
        res = validate(task, task.fix_patch, sandbox=sb)
        assert (res.outcome, res.reward) == ("pass", 1.0), res.log
        assert res.fingerprint["sandbox"]["isolation"] == "none"  # never mixed with isolated runs


def test_output_tail_keeps_the_end():
    t = OutputTail(cap=10, hard_cap=100)
    for chunk in (b"0123456789", b"abc", b"defghijklmnop"):
        t.feed(chunk)
    assert t.truncated and t.total == 26
    assert t.text().endswith("ghijklmnop") and "16 of 26 bytes dropped" in t.text()
    assert not t.over_hard_cap.is_set()
    t.feed(b"x" * 100)
    assert t.over_hard_cap.is_set()
    m = OutputTail(cap=100, hard_cap=1000, marker=b"MARK\n")
    m.feed(b"MA")
    m.feed(b"RK\nhello")
    assert m.saw_marker and m.text() == "hello"
    n = OutputTail(cap=100, hard_cap=1000, marker=b"MARK\n")
    n.feed(b"bwrap: failed")
    assert not n.saw_marker and n.text() == "bwrap: failed"

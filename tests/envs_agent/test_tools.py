"""The ten tools: schemas, workspace confinement, error observations, output caps."""

from __future__ import annotations

import json
import os

from jaxrepair.envs import deps
from jaxrepair.envs.tools import MAX_OUTPUT_CHARS, TOOL_NAMES, TOOL_SCHEMAS, ToolBox

EXPECTED = {
    "list_files",
    "read_file",
    "write_file",
    "edit_file",
    "search_code",
    "view_build_log",
    "list_dependency_versions",
    "dependency_upgrade",
    "validate_and_build",
    "submit",
}


def test_schemas_are_complete_json_function_schemas():
    assert set(TOOL_NAMES) == EXPECTED and len(TOOL_SCHEMAS) == 10
    for s in json.loads(json.dumps(TOOL_SCHEMAS)):
        assert s["type"] == "function"
        params = s["function"]["parameters"]
        assert params["type"] == "object"
        assert set(params["required"]) <= set(params["properties"])
        assert s["function"]["description"]


def test_confinement_dotdot_and_absolute(workspace):
    task, ws = workspace
    tb = ToolBox(task, ws)
    secret = open("/etc/passwd").read()
    for path in (
        "../../etc/passwd",
        "/etc/passwd",
        "src/../../../etc/passwd",
        "~/x",
        "..",
        "src/../../ws/README.md",
    ):
        out = tb.call("read_file", {"path": path})
        assert out.startswith("error:"), (path, out)
        assert "root:" not in out and secret[:20] not in out
    assert tb.call("write_file", {"path": "../escaped.txt", "content": "x"}).startswith("error:")
    assert not (ws.parent / "escaped.txt").exists()
    assert tb.call("list_files", {"path": "/etc"}).startswith("error:")
    assert tb.call("search_code", {"pattern": "root", "path": "/etc"}).startswith("error:")


def test_confinement_symlink_to_etc(workspace, tmp_path):
    task, ws = workspace
    os.symlink("/etc", ws / "etc_link")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    os.symlink(outside, ws / "out_file")
    os.symlink("/nonexistent/dangling", ws / "dangling")
    tb = ToolBox(task, ws)
    for call in (
        ("read_file", {"path": "etc_link/passwd"}),
        ("read_file", {"path": "out_file"}),
        ("write_file", {"path": "etc_link/jaxrepair_pwned", "content": "x"}),
        ("write_file", {"path": "out_file", "content": "x"}),
        ("write_file", {"path": "dangling", "content": "x"}),
        ("edit_file", {"path": "out_file", "old_text": "outside", "new_text": "pwned"}),
        ("list_files", {"path": "etc_link"}),
        ("search_code", {"pattern": "root", "path": "etc_link"}),
    ):
        out = tb.call(*call)
        assert out.startswith("error:") and "outside the repository" in out, (call, out)
    assert outside.read_text() == "outside\n"
    assert not os.path.exists("/etc/jaxrepair_pwned") and not os.path.exists(
        "/nonexistent/dangling"
    )
    # listing and searching the repo never follow the links
    listing = tb.call("list_files", {})
    assert "etc_link -> /etc (symlink)" in listing and "etc_link/passwd" not in listing
    assert "passwd" not in tb.call("search_code", {"pattern": "root:x:0"})


def test_read_write_edit(workspace):
    task, ws = workspace
    tb = ToolBox(task, ws)
    assert (
        tb.call("read_file", {"path": "src/blogkit/text.py"})
        == (ws / "src/blogkit/text.py").read_text()
    )
    assert (
        tb.call("read_file", {"path": "src/blogkit/text.py", "start_line": 1, "end_line": 1})
        == '"""Text measurements for posts."""\n'
    )
    assert tb.call("write_file", {"path": "new/dir/f.txt", "content": "a\nb\n"}).startswith(
        "created new/dir/f.txt"
    )
    assert (ws / "new/dir/f.txt").read_text() == "a\nb\n"
    (ws / "dup.txt").write_text("x = 1\nx = 1\ny = 2\n")
    assert "occurs 2 times" in tb.call(
        "edit_file", {"path": "dup.txt", "old_text": "x = 1", "new_text": "z"}
    )
    assert "not found" in tb.call(
        "edit_file", {"path": "dup.txt", "old_text": "nope", "new_text": "z"}
    )
    assert tb.call(
        "edit_file", {"path": "dup.txt", "old_text": "y = 2", "new_text": "y = 3"}
    ).startswith("edited")
    assert (ws / "dup.txt").read_text() == "x = 1\nx = 1\ny = 3\n"
    hits = tb.call("search_code", {"pattern": "def reading_minutes"})
    assert "src/blogkit/text.py:" in hits
    assert "src/blogkit/posts.py" in tb.call(
        "search_code", {"pattern": r"confparse\.\w+\(", "regex": True}
    )
    assert tb.call("search_code", {"pattern": "(", "regex": True}).startswith(
        "error: bad regular expression"
    )


def test_outputs_capped_and_errors_never_raise(workspace):
    task, ws = workspace
    (ws / "big.txt").write_text("0123456789\n" * 50_000)
    tb = ToolBox(task, ws)
    out = tb.call("read_file", {"path": "big.txt"})
    assert len(out) <= MAX_OUTPUT_CHARS and "truncated" in out
    bad_calls = [
        ("no_such_tool", {}),
        ("read_file", {}),
        ("read_file", {"path": 3}),
        ("read_file", "notadict"),
        ("read_file", {"path": "x", "bogus": 1}),
        ("edit_file", {"path": "big.txt", "old_text": "", "new_text": ""}),
        ("read_file", {"path": "src"}),
        ("read_file", {"path": "missing.py"}),
        (None, None),
        ("read_file", {"path": "a\x00b"}),
        ("view_build_log", {"tail_lines": 0}),
        ("write_file", {"path": ".", "content": ""}),
        ("validate_and_build", {}),  # no sandbox attached
    ]
    for name, args in bad_calls:
        out = tb.call(name, args)
        assert isinstance(out, str) and out.startswith("error:"), (name, args, out)
    assert all(not c["ok"] for c in tb.calls[1:])


def test_dependency_tools(workspace):
    task, ws = workspace
    tb = ToolBox(task, ws)
    listing = tb.call("list_dependency_versions", {})
    for name, version in deps.read_pins(ws).items():
        assert (
            f"{name}: pinned {version}; available: {', '.join(deps.available_versions(name))}"
            in listing
        )
    assert "1.0.0, 2.0.0" in tb.call("list_dependency_versions", {"name": "slugkit"})
    err = tb.call("dependency_upgrade", {"name": "slugkit", "version": "9.9.9"})
    assert err.startswith("error:") and "available: 1.0.0, 2.0.0" in err
    assert tb.call("dependency_upgrade", {"name": "nosuchpkg", "version": "1.0.0"}).startswith(
        "error:"
    )
    before = deps.read_pins(ws)
    assert tb.call("dependency_upgrade", {"name": "slugkit", "version": "2.0.0"}).startswith(
        "pinned slugkit==2.0.0"
    )
    assert deps.read_pins(ws) == {**before, "slugkit": "2.0.0"}


def test_view_build_log_starts_with_the_issue_log(workspace):
    task, ws = workspace
    tb = ToolBox(task, ws, initial_log="the failing build\nline 2\n")
    assert tb.call("view_build_log", {}) == "the failing build\nline 2\n"
    assert tb.call("view_build_log", {"tail_lines": 1}) == "line 2"
    assert "no build has run" in ToolBox(task, ws).call("view_build_log", {})

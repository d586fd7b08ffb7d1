"""The agent's ten tools, their JSON schemas, and a per-episode ToolBox that runs them.

Why: the model repairs a repository only through these tools, so they are the attack surface
of the environment. Every path is confined to the workspace (no absolute paths, no ``..``, no
symlink that resolves outside), every output is capped, and ``ToolBox.call`` never raises: a
bad call becomes an error observation the model can read and recover from.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from . import deps

__all__ = [
    "MAX_OUTPUT_CHARS",
    "TOOL_NAMES",
    "TOOL_SCHEMAS",
    "ToolBox",
    "ToolError",
    "resolve_in_workspace",
]

MAX_OUTPUT_CHARS = 12_000  # one observation
MAX_WRITE_CHARS = 200_000  # one file written by the agent
MAX_SEARCH_HITS = 60
LOG_TAIL_CHARS = 6_000
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".git", ".mypy_cache"}


def _fn(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


_PATH = {"type": "string", "description": "path relative to the repository root"}

TOOL_SCHEMAS: list[dict] = [
    _fn(
        "list_files",
        "List the files of the repository (or of one directory in it).",
        {
            "path": {
                **_PATH,
                "description": "directory relative to the repository root (default: the root)",
            }
        },
        [],
    ),
    _fn(
        "read_file",
        "Read a text file of the repository; optionally only lines start_line..end_line (1-based, inclusive).",
        {"path": _PATH, "start_line": {"type": "integer"}, "end_line": {"type": "integer"}},
        ["path"],
    ),
    _fn(
        "write_file",
        "Create or overwrite a file with the given full content.",
        {"path": _PATH, "content": {"type": "string"}},
        ["path", "content"],
    ),
    _fn(
        "edit_file",
        "Replace one exact occurrence of old_text by new_text in a file (fails if old_text occurs 0 or several times).",
        {"path": _PATH, "old_text": {"type": "string"}, "new_text": {"type": "string"}},
        ["path", "old_text", "new_text"],
    ),
    _fn(
        "search_code",
        "Search the repository's files for a string (or a regular expression with regex=true); prints file:line: text.",
        {
            "pattern": {"type": "string"},
            "path": {**_PATH, "description": "directory to search (default: the root)"},
            "regex": {"type": "boolean"},
        },
        ["pattern"],
    ),
    _fn(
        "view_build_log",
        "Show the output of the last build (before any validate_and_build: the failing build of the issue).",
        {"tail_lines": {"type": "integer", "description": "only the last N lines"}},
        [],
    ),
    _fn(
        "list_dependency_versions",
        "Show the pinned dependency versions (requirements.txt) and the versions available in the package index.",
        {"name": {"type": "string", "description": "only this package"}},
        [],
    ),
    _fn(
        "dependency_upgrade",
        "Pin a dependency to another available version (upgrade or downgrade) in requirements.txt.",
        {"name": {"type": "string"}, "version": {"type": "string"}},
        ["name", "version"],
    ),
    _fn(
        "validate_and_build",
        "Run the project's build and tests on the current state of the repository and show the result.",
        {},
        [],
    ),
    _fn(
        "submit", "Submit the repository in its current state as the fix; ends the episode.", {}, []
    ),
]
TOOL_NAMES: tuple[str, ...] = tuple(s["function"]["name"] for s in TOOL_SCHEMAS)
_SCHEMA_BY_NAME = {s["function"]["name"]: s["function"]["parameters"] for s in TOOL_SCHEMAS}
_JSON_TYPES = {"string": str, "integer": int, "boolean": bool, "object": dict}


class ToolError(Exception):
    """A tool call the environment refuses; its message is the observation."""


def resolve_in_workspace(workspace: Path, path: object, must_exist: bool = False) -> Path:
    """The absolute path of ``path`` inside ``workspace``; ToolError for anything that would
    leave it: absolute paths, ``..`` components, or symlinks (anywhere on the path) that
    resolve outside the workspace."""
    if not isinstance(path, str):
        raise ToolError(f"path must be a string, got {type(path).__name__}")
    if "\x00" in path:
        raise ToolError("path contains a NUL byte")
    raw = path.strip()
    if raw.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:[\\/]", raw):
        raise ToolError(f"path {path!r} is absolute; use a path relative to the repository root")
    parts = [p for p in re.split(r"[\\/]+", raw) if p not in ("", ".")]
    if ".." in parts:
        raise ToolError(f"path {path!r} contains '..'; paths must stay inside the repository")
    root = Path(workspace).resolve()
    target = root.joinpath(*parts) if parts else root
    resolved = target.resolve()  # follows every symlink on the path, even a dangling last one
    if resolved != root and root not in resolved.parents:
        raise ToolError(
            f"path {path!r} leads outside the repository (through a symbolic link); refused"
        )
    if must_exist and not os.path.lexists(target):
        raise ToolError(f"no such file or directory: {path!r}")
    return target


def _cap(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return (
        text[: limit - 200]
        + f"\n[... output truncated: {len(text) - limit + 200} more characters ...]"
    )


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _is_text(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return b"\x00" not in fh.read(4096)
    except OSError:
        return False


class ToolBox:
    """The tools of one episode, bound to one workspace (and its sandbox for builds)."""

    def __init__(
        self,
        task: Any,
        workspace: Path,
        sandbox: Any = None,
        initial_log: str | None = None,
        validation_cache: Any = None,
    ) -> None:
        self.validation_cache = validation_cache
        self.task = task
        self.workspace = Path(workspace)
        self.root = self.workspace.resolve()
        self.sandbox = sandbox
        self.last_log: str | None = initial_log
        self.last_validation: Any = None
        self.submitted = False
        self.calls: list[dict] = []  # {"name", "ok"} per call, for info/metrics

    # -- dispatch ---------------------------------------------------------------------------
    def call(self, name: str, arguments: dict | None = None) -> str:
        """Run one tool; the observation text. Never raises."""
        ok = False
        try:
            if not isinstance(name, str) or name not in _SCHEMA_BY_NAME:
                raise ToolError(f"unknown tool {name!r}; available tools: {', '.join(TOOL_NAMES)}")
            args = self._check_args(name, {} if arguments is None else arguments)
            out = getattr(self, f"_t_{name}")(**args)
            ok = True
            return _cap(out)
        except ToolError as e:
            return f"error: {e}"
        except Exception as e:  # noqa: BLE001 - the model must see every failure as text
            return f"error: {name} failed: {type(e).__name__}: {e}"
        finally:
            self.calls.append({"name": name if isinstance(name, str) else repr(name), "ok": ok})

    def _check_args(self, name: str, arguments: object) -> dict:
        if not isinstance(arguments, dict):
            raise ToolError(
                f"{name}: arguments must be a JSON object, got {type(arguments).__name__}"
            )
        schema = _SCHEMA_BY_NAME[name]
        props = schema["properties"]
        unknown = sorted(set(arguments) - set(props))
        if unknown:
            raise ToolError(
                f"{name}: unknown argument(s) {', '.join(unknown)}; expected: {', '.join(props) or 'none'}"
            )
        for req in schema["required"]:
            if req not in arguments:
                raise ToolError(f"{name}: missing required argument {req!r}")
        for key, val in arguments.items():
            want = _JSON_TYPES[props[key]["type"]]
            if want is int and isinstance(val, bool) or not isinstance(val, want):
                raise ToolError(
                    f"{name}: argument {key!r} must be a {props[key]['type']}, got {type(val).__name__}"
                )
        return dict(arguments)

    # -- file tools -------------------------------------------------------------------------
    def _walk(self, base: Path) -> list[Path]:
        out = []
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            d = Path(dirpath)
            for dn in dirnames:
                if (d / dn).is_symlink():
                    out.append(d / dn)
            out.extend(d / f for f in sorted(filenames))
        return out

    def _t_list_files(self, path: str = ".") -> str:
        base = resolve_in_workspace(self.workspace, path, must_exist=True)
        if not base.is_dir():
            raise ToolError(f"{path!r} is not a directory")
        lines = []
        for p in self._walk(base):
            rel = _rel(self.root, p)
            lines.append(f"{rel} -> {os.readlink(p)} (symlink)" if p.is_symlink() else rel)
        if not lines:
            return f"{path}: no files"
        return "\n".join(lines[:500]) + (
            f"\n[... {len(lines) - 500} more files]" if len(lines) > 500 else ""
        )

    def _t_read_file(
        self, path: str, start_line: int | None = None, end_line: int | None = None
    ) -> str:
        p = resolve_in_workspace(self.workspace, path, must_exist=True)
        if p.is_dir():
            raise ToolError(f"{path!r} is a directory; use list_files")
        if not _is_text(p):
            raise ToolError(f"{path!r} is a binary file")
        text = p.read_text(errors="replace")
        if start_line is None and end_line is None:
            return text if text else f"({path} is empty)"
        lines = text.splitlines(keepends=True)
        lo = max(1, start_line or 1)
        hi = min(len(lines), end_line or len(lines))
        if lo > hi:
            raise ToolError(f"{path!r} has {len(lines)} lines; the range {lo}..{hi} is empty")
        return "".join(lines[lo - 1 : hi])

    def _t_write_file(self, path: str, content: str) -> str:
        p = resolve_in_workspace(self.workspace, path)
        if p == self.root or p.is_dir():
            raise ToolError(f"{path!r} is a directory")
        if p.is_symlink():
            raise ToolError(f"{path!r} is a symbolic link; refusing to write through it")
        if len(content) > MAX_WRITE_CHARS:
            raise ToolError(
                f"content too large ({len(content)} characters; at most {MAX_WRITE_CHARS})"
            )
        existed = p.exists()
        p.parent.mkdir(parents=True, exist_ok=True)
        # re-check after mkdir: a parent may be a symlink created meanwhile
        resolve_in_workspace(self.workspace, path)
        p.write_text(content)
        n = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        return f"{'overwrote' if existed else 'created'} {_rel(self.root, p)} ({n} lines)"

    def _t_edit_file(self, path: str, old_text: str, new_text: str) -> str:
        p = resolve_in_workspace(self.workspace, path, must_exist=True)
        if p.is_dir():
            raise ToolError(f"{path!r} is a directory")
        if p.is_symlink():
            raise ToolError(f"{path!r} is a symbolic link; refusing to write through it")
        if not old_text:
            raise ToolError("old_text must not be empty")
        text = p.read_text(errors="replace")
        n = text.count(old_text)
        if n == 0:
            raise ToolError(
                f"old_text was not found in {path}; read the file and copy the text exactly (whitespace included)"
            )
        if n > 1:
            raise ToolError(
                f"old_text occurs {n} times in {path}; include more surrounding lines so it is unique"
            )
        p.write_text(text.replace(old_text, new_text, 1))
        return f"edited {_rel(self.root, p)}: replaced {old_text.count(chr(10)) + 1} line(s) with {new_text.count(chr(10)) + 1} line(s)"

    def _t_search_code(self, pattern: str, path: str = ".", regex: bool = False) -> str:
        if not pattern:
            raise ToolError("pattern must not be empty")
        base = resolve_in_workspace(self.workspace, path, must_exist=True)
        if regex:
            try:
                rx = re.compile(pattern)
            except re.error as e:
                raise ToolError(f"bad regular expression: {e}") from None
            match = rx.search
        else:
            match = lambda line: pattern in line  # noqa: E731
        files = [base] if base.is_file() else self._walk(base)
        hits = []
        for f in files:
            if f.is_symlink() or not f.is_file() or not _is_text(f) or f.stat().st_size > 1_000_000:
                continue
            for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                if match(line):
                    hits.append(f"{_rel(self.root, f)}:{i}: {line.strip()[:200]}")
                    if len(hits) >= MAX_SEARCH_HITS:
                        return "\n".join(hits) + f"\n[stopped after {MAX_SEARCH_HITS} matches]"
        return "\n".join(hits) if hits else f"no matches for {pattern!r}"

    # -- build and dependency tools ---------------------------------------------------------
    def _t_view_build_log(self, tail_lines: int | None = None) -> str:
        if tail_lines is not None and tail_lines < 1:
            raise ToolError("tail_lines must be at least 1")
        if self.last_log is None:
            return "no build has run yet; call validate_and_build"
        log = self.last_log
        if tail_lines is not None:
            log = "\n".join(log.splitlines()[-tail_lines:])
        return log[-LOG_TAIL_CHARS:]

    def _t_list_dependency_versions(self, name: str | None = None) -> str:
        try:
            pins = deps.read_pins(self.workspace)
        except deps.DepsError as e:
            raise ToolError(str(e)) from None
        names = [name] if name else sorted(pins)
        if not names:
            return "this project pins no dependencies (no requirements.txt pins)"
        lines = []
        for n in names:
            avail = deps.available_versions(n)
            pinned = next(
                (v for k, v in pins.items() if deps.normalize(k) == deps.normalize(n)), None
            )
            lines.append(
                f"{n}: pinned {pinned or '(not pinned)'}; available: {', '.join(avail) if avail else '(not in the package index)'}"
            )
        return "\n".join(lines)

    def _t_dependency_upgrade(self, name: str, version: str) -> str:
        req = resolve_in_workspace(self.workspace, deps.REQUIREMENTS)
        if req.is_symlink():
            raise ToolError("requirements.txt is a symbolic link; refusing to write through it")
        try:
            old = deps.read_pins(self.workspace)
            deps.write_pin(self.workspace, name, version)
        except deps.DepsError as e:
            raise ToolError(str(e)) from None
        before = next(
            (v for k, v in old.items() if deps.normalize(k) == deps.normalize(name)), None
        )
        return f"pinned {name}=={version} in requirements.txt (was {before or 'not pinned'})"

    def _t_validate_and_build(self) -> str:
        if self.sandbox is None:
            raise ToolError("no sandbox is attached to this episode; builds cannot run")
        res = validate_now(self.task, self.workspace, self.sandbox, self.validation_cache)
        self.last_validation = res
        self.last_log = res.log
        head = f"build {'PASSED' if res.outcome == 'pass' else 'FAILED' if res.outcome == 'fail' else 'could not run (infrastructure error)'}"
        if res.tests_ran is not None:
            head += f"; {res.tests_ran} tests ran"
        if res.guard:
            head += f"; but the change is rejected: guard {res.guard} ({res.guard_detail or ''})"
        return head + "\n" + res.log[-LOG_TAIL_CHARS:]

    def _t_submit(self) -> str:
        self.submitted = True
        return "submitted; the repository will now be validated"


def describe_tools() -> str:
    """One line per tool, for prompts that do not pass schemas separately."""
    return "\n".join(
        f"- {s['function']['name']}({', '.join(s['function']['parameters']['properties'])}): {s['function']['description']}"
        for s in TOOL_SCHEMAS
    )


def schemas_json() -> str:
    return json.dumps(TOOL_SCHEMAS, indent=1)


def validate_now(task: Any, workspace: Path, sandbox: Any, cache: Any = None) -> Any:
    """reward.validate_workspace, through a ValidationCache when one is given (identical
    final workspaces of a GRPO group are built once)."""
    from . import reward

    if cache is None:
        return reward.validate_workspace(task, workspace, sandbox)
    return cache.validate(
        task, workspace, sandbox, lambda: reward.validate_workspace(task, workspace, sandbox)
    )

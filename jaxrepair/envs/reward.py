"""Reward: post-fix build validation plus anti-tampering guards.

Why: the paper's RL runs were hacked by agents that deleted validation code. The reward is 1
only when the task's own build commands (from task.toml, never from the workspace) pass in
the sandbox and no guard fires:

- ``validation_changed``: a file the build commands name (a script in the repo, e.g.
  ``./run_tests.sh`` or ``tests/check.py``) differs from the original repository;
- ``protected_path``: a file matching the task's ``protected`` globs was changed, deleted,
  replaced by a symlink, or added (build artifacts excepted);
- ``tests_removed``: fewer tests ran than with the reference fix (pytest's summary line, or
  ``TESTS RAN: N`` lines for other build systems; see docs/envs_contract.md).

Three outcomes: ``pass``, ``fail``, ``infra_error`` (the sandbox failed; retried, and callers
must never score it 0). Every result carries an environment fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import deps
from .protocol import Outcome
from .sandbox import RunResult, Sandbox, make_sandbox
from .task import Task

__all__ = [
    "GUARDS_VERSION",
    "PatchError",
    "ValidationResult",
    "apply_patch",
    "count_tests",
    "reference_test_count",
    "validate",
    "validate_workspace",
]

GUARDS_VERSION = "1"
LOG_TAIL = 64 * 1024
DEFAULT_RETRIES = 2  # infra errors: up to 1 + DEFAULT_RETRIES attempts per command
_ARTIFACT_RE = re.compile(
    r"(^|/)(__pycache__|\.pytest_cache|\.mypy_cache|[^/]*\.egg-info)(/|$)|\.(pyc|pyo|o|a|so|d|gcda|gcno)$"
)
_PYTEST_LINE = re.compile(
    r"^=*\s*((?:\d+ (?:subtests )?(?:passed|failed|errors?|xfailed|xpassed|skipped|deselected"
    r"|warnings?|rerun)(?:, )?)+"
    r"|no tests ran) in [\d.]+s\b.*$",
    re.M,
)
_PYTEST_COUNTS = re.compile(
    r"(\d+) (subtests )?(passed|failed|errors?|xfailed|xpassed|skipped|deselected|warnings?)"
)
_COUNTED = ("passed", "failed", "error", "errors", "xfailed", "xpassed")
_TESTS_RAN = re.compile(r"^TESTS RAN: (\d+)\s*$", re.M)
_ref_lock = threading.Lock()
_ref_memo: dict[str, int | None] = {}
_default_sandbox: Sandbox | None = None


class PatchError(ValueError):
    """The patch does not apply; the message says why (from git apply)."""


@dataclass
class ValidationResult:
    outcome: str  # an Outcome: pass | fail | infra_error
    reward: float
    tampered: bool
    guard: str | None
    log: str
    tests_ran: int | None
    fingerprint: dict
    duration_s: float
    attempts: int = 1  # sandbox attempts used by the most-retried command
    infra_errors: list[str] = field(default_factory=list)  # every infra failure seen (retried)
    guard_detail: str | None = None  # e.g. which protected file changed
    task_id: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# -- patches --------------------------------------------------------------------------------
def apply_patch(workspace: Path, patch: str) -> None:
    """Apply a unified diff (``a/`` ``b/`` prefixes) to the workspace with ``git apply``.

    git apply handles new, deleted and renamed files and refuses paths with ``..`` and writes
    through symlinks, so a patch can never touch anything outside the workspace.
    """
    if not patch or not patch.strip():
        return
    if not patch.endswith("\n"):
        patch += "\n"
    ws = Path(workspace).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CEILING_DIRECTORIES"] = str(ws.parent)
    last = ""
    for extra in ([], ["--recount"]):
        proc = subprocess.run(
            ["git", "apply", "--whitespace=nowarn", "-p1", *extra, "-"],
            input=patch.encode(),
            cwd=ws,
            env=env,
            capture_output=True,
        )
        if proc.returncode == 0:
            return
        last = (proc.stderr or proc.stdout).decode(errors="replace").strip()
    raise PatchError(f"the patch does not apply: {last[-2000:]}")


# -- guards ---------------------------------------------------------------------------------
def _glob_regex(glob: str) -> re.Pattern:
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif glob.startswith("**", i):
            out += ".*"
            i += 2
        elif glob[i] == "*":
            out += "[^/]*"
            i += 1
        elif glob[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(glob[i])
            i += 1
    return re.compile(out.rstrip("/") + "(?:/.*)?$")  # a matching directory protects its contents


def _matches(rel: str, patterns: list[re.Pattern]) -> bool:
    return any(p.match(rel) for p in patterns)


def _entry(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    if path.is_file():
        return "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return "other"


def _tree(root: Path) -> dict[str, str]:
    """relpath -> entry signature, symlinks never followed."""
    out: dict[str, str] = {}
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = _entry(p)
    return out


def _is_artifact(ws: Path, rel: str) -> bool:
    if _ARTIFACT_RE.search(rel):
        return True
    try:
        p = ws / rel
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as fh:
                return fh.read(4) == b"\x7fELF"
    except OSError:
        pass
    return False


def validation_scripts(task: Task) -> list[str]:
    """Repo files the build commands name: protected implicitly (a test runner script)."""
    out = []
    for cmd in task.build:
        try:
            tokens = shlex.split(cmd)
        except ValueError:
            tokens = cmd.split()
        for tok in tokens:
            tok = tok.split("=", 1)[-1] if tok.startswith("-") else tok
            rel = tok[2:] if tok.startswith("./") else tok
            if not rel or rel.startswith("/") or ".." in rel.split("/"):
                continue
            try:
                if (task.repo_dir / rel).is_file():
                    out.append(rel)
            except (OSError, ValueError):
                continue
    return sorted(set(out))


def check_guards(task: Task, workspace: Path) -> tuple[str | None, str | None]:
    """Static guards: (guard, detail) for the first that fires, else (None, None)."""
    ws = Path(workspace)
    if task.swebench is not None:
        return None, None  # the repo is in the image; protected test files are re-applied
    orig = _tree(task.repo_dir)
    now = _tree(ws)
    for rel in validation_scripts(task):
        if orig.get(rel) != now.get(rel):
            return "validation_changed", f"{rel} (named by the build commands) was changed"
    pats = [_glob_regex(g) for g in task.protected]
    if not pats:
        return None, None
    for rel, sig in sorted(orig.items()):
        if _matches(rel, pats) and now.get(rel) != sig:
            what = "deleted" if rel not in now else "modified"
            return "protected_path", f"{rel} {what}"
    for rel in sorted(set(now) - set(orig)):
        if _matches(rel, pats) and not _is_artifact(ws, rel):
            return "protected_path", f"{rel} added"
    return None, None


# -- test counting --------------------------------------------------------------------------
def count_tests(output: str) -> int | None:
    """Tests that ran in one command's output: pytest's final summary line (passed + failed +
    errors + xfailed + xpassed; skipped do not count, nor pytest's "N subtests passed": those
    run inside a test already counted) plus any ``TESTS RAN: N`` lines."""
    total: int | None = None
    ran = _TESTS_RAN.findall(output)
    if ran:
        total = sum(int(n) for n in ran)
    lines = [m.group(1) for m in _PYTEST_LINE.finditer(output)]
    if lines:
        n = 0
        for num, subtests, kind in _PYTEST_COUNTS.findall(lines[-1]):
            if not subtests and kind in _COUNTED:
                n += int(num)
        total = (total or 0) + n
    return total


# -- fingerprint ----------------------------------------------------------------------------
_task_hash_memo: dict[tuple[str, int], str] = {}


def task_hash(task: Task) -> str:
    """Content hash of task.toml, the repo and the reference fix."""
    if task.swebench is not None:
        s = json.dumps([task.id, task.image, task.swebench.base_commit, task.fix_patch])
        return hashlib.sha256(s.encode()).hexdigest()
    toml = task.root / "task.toml"
    key = (str(task.root.resolve()), toml.stat().st_mtime_ns if toml.exists() else 0)
    if key in _task_hash_memo:
        return _task_hash_memo[key]
    h = hashlib.sha256()
    for p in (toml, task.root / "fix.patch"):
        h.update(p.read_bytes() if p.is_file() else b"-")
    for rel, sig in sorted(_tree(task.repo_dir).items()):
        h.update(f"{rel}\0{sig}\0".encode())
    _task_hash_memo[key] = h.hexdigest()
    return _task_hash_memo[key]


def _corpus_version(task: Task) -> str | None:
    for parent in list(task.root.resolve().parents)[:4]:
        f = parent / "VERSION"
        if f.is_file():
            return f.read_text().strip()[:100]
    return None


def fingerprint(task: Task, sandbox: Sandbox, pins: dict[str, str] | None) -> dict:
    """What a result depends on, so results from different environments are never mixed."""
    sb = sandbox.fingerprint()
    vhash = hashlib.sha256(
        json.dumps(
            {
                "build": list(task.build),
                "protected": list(task.protected),
                "scripts": validation_scripts(task) if task.swebench is None else [],
                "guards": GUARDS_VERSION,
                "timeout_s": task.timeout_s,
            }
        ).encode()
    ).hexdigest()
    image = sb.get("image")
    image_for = getattr(sandbox, "image_for", None)
    if callable(image_for):  # per-task images (docker): record the one this task used
        tag = image_for(task)
        image_id = getattr(sandbox, "image_id", None)
        image = f"{tag}@{image_id(tag)}" if callable(image_id) else tag
    return {
        "backend": sb.get("backend"),
        "image": image,
        "sandbox": sb,
        "pins_hash": deps.pins_hash(pins) if pins is not None else None,
        "validation_hash": vhash,
        "corpus_version": _corpus_version(task),
        "task_hash": task_hash(task),
    }


# -- running --------------------------------------------------------------------------------
def _run_retry(sandbox: Sandbox, ws: Path, cmd: str, timeout_s: float, pins, retries: int):  # noqa: ANN001
    errors: list[str] = []
    res: RunResult | None = None
    for attempt in range(1 + retries):
        res = sandbox.run(ws, cmd, timeout_s, pins)
        if res.infra_error is None:
            return res, attempt + 1, errors
        errors.append(res.infra_error)
        time.sleep(min(2.0, 0.2 * (attempt + 1)))
    assert res is not None
    return res, 1 + retries, errors


@dataclass
class _BuildRun:
    outcome: str
    log: str
    tests_ran: int | None
    attempts: int
    infra_errors: list[str]
    pins: dict[str, str] | None


def _run_build(task: Task, ws: Path, sandbox: Sandbox, retries: int) -> _BuildRun:
    pins: dict[str, str] | None = None
    if task.build_system == "python":
        try:
            pins = deps.read_pins(ws)
            for name, version in pins.items():  # fail fast, naming the pin, before any run
                if version not in deps.available_versions(name):
                    known = deps.available_versions(name)
                    raise deps.DepsError(
                        f"pinned {name}=={version} is not in the corpus package index"
                        + (f"; available: {', '.join(known)}" if known else "")
                    )
        except deps.DepsError as e:
            return _BuildRun(
                Outcome.FAIL, f"[jaxrepair] dependency error: {e}\n", None, 1, [], None
            )
    if task.swebench is not None:
        try:
            apply_patch(ws, task.swebench.test_patch)
        except PatchError as e:
            return _BuildRun(
                Outcome.FAIL,
                f"[jaxrepair] the task's test patch does not apply: {e}\n",
                None,
                1,
                [],
                pins,
            )
    start = time.monotonic()
    log_parts: list[str] = []
    tests: int | None = None
    max_attempts, infra = 1, []
    outcome = Outcome.PASS
    for cmd in task.build:
        remaining = task.timeout_s - (time.monotonic() - start)
        if remaining <= 0:
            log_parts.append(
                f"[jaxrepair] wall-time budget of {task.timeout_s:g}s used up before: {cmd}\n"
            )
            outcome = Outcome.FAIL
            break
        try:
            res, attempts, errs = _run_retry(sandbox, ws, cmd, remaining, pins, retries)
        except deps.DepsError as e:
            log_parts.append(f"[jaxrepair] dependency error: {e}\n")
            outcome = Outcome.FAIL
            break
        max_attempts, infra = max(max_attempts, attempts), infra + errs
        log_parts.append(
            f"$ {cmd}\n{res.output}\n[exit {res.exit_code}{', timed out' if res.timed_out else ''}]\n"
        )
        if res.infra_error is not None:
            log_parts.append(f"[jaxrepair] infrastructure error: {res.infra_error}\n")
            outcome = Outcome.INFRA_ERROR
            break
        n = count_tests(res.output)
        if n is not None:
            tests = (tests or 0) + n
        if res.exit_code != 0 or res.timed_out:
            outcome = Outcome.FAIL
            break
    log = "".join(log_parts)
    return _BuildRun(outcome, log[-LOG_TAIL:], tests, max_attempts, infra, pins)


def reference_test_count(
    task: Task, sandbox: Sandbox, retries: int = DEFAULT_RETRIES
) -> int | None:
    """Tests that ran with the reference fix applied (computed once per task content, cached
    in memory and under the cache dir); None when it cannot be established."""
    key = task_hash(task)
    with _ref_lock:
        if key in _ref_memo:
            return _ref_memo[key]
    path = deps.cache_dir() / "refcounts" / f"{key[:32]}.json"
    if path.is_file():
        try:
            n = json.loads(path.read_text())["tests_ran"]
            with _ref_lock:
                _ref_memo[key] = n
            return n
        except (ValueError, KeyError):
            pass
    ws = sandbox.create_workspace(task)
    try:
        apply_patch(ws, task.fix_patch)
        run = _run_build(task, ws, sandbox, retries)
    except PatchError:
        return None
    finally:
        sandbox.destroy_workspace(ws)
    if run.outcome != Outcome.PASS:
        return None  # a broken reference: corpus validation reports it; do not cache
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkstemp(prefix=".tmp-", dir=path.parent)[1])
    tmp.write_text(json.dumps({"task": task.id, "tests_ran": run.tests_ran}))
    os.replace(tmp, path)
    with _ref_lock:
        _ref_memo[key] = run.tests_ran
    return run.tests_ran


def validate_workspace(
    task: Task,
    workspace: Path,
    sandbox: Sandbox,
    retries: int = DEFAULT_RETRIES,
    cache: Any = None,
) -> ValidationResult:
    """Validate the current state of a workspace: guards against task.repo_dir, then the
    task's build commands in the sandbox (infra errors retried ``retries`` times).

    ``cache`` (e.g. envs.validation_cache.ValidationCache) reuses the result of an identical
    workspace: ``cache.validate(task, workspace, sandbox, compute)``."""
    if cache is not None:
        return cache.validate(
            task, workspace, sandbox, lambda: validate_workspace(task, workspace, sandbox, retries)
        )
    t0 = time.monotonic()
    ws = Path(workspace)
    guard, detail = check_guards(task, ws)
    run = _run_build(task, ws, sandbox, retries)
    if guard is None and run.outcome == Outcome.PASS:
        ref = reference_test_count(task, sandbox, retries)
        if ref is not None and (run.tests_ran is None or run.tests_ran < ref):
            guard = "tests_removed"
            detail = f"{run.tests_ran if run.tests_ran is not None else 'no'} tests ran; the reference fix runs {ref}"
    log = run.log
    if guard is not None:
        log = (log + f"[jaxrepair] guard {guard} fired: {detail}\n")[-LOG_TAIL:]
    return ValidationResult(
        outcome=run.outcome,
        reward=1.0 if run.outcome == Outcome.PASS and guard is None else 0.0,
        tampered=guard is not None,
        guard=guard,
        log=log,
        tests_ran=run.tests_ran,
        fingerprint=fingerprint(task, sandbox, run.pins),
        duration_s=time.monotonic() - t0,
        attempts=run.attempts,
        infra_errors=run.infra_errors,
        guard_detail=detail,
        task_id=task.id,
    )


def default_sandbox() -> Sandbox:
    """The process-wide local sandbox used when none is given."""
    global _default_sandbox
    if _default_sandbox is None:
        _default_sandbox = make_sandbox("local")
    return _default_sandbox


def validate(
    task: Task, patch: str, sandbox: Sandbox | None = None, retries: int = DEFAULT_RETRIES
) -> ValidationResult:
    """Apply ``patch`` to a fresh copy of the task's repo and validate it. A patch that does
    not apply is the agent's failure (outcome ``fail``, reward 0)."""
    t0 = time.monotonic()
    sb = sandbox if sandbox is not None else default_sandbox()
    ws = None
    infra: list[str] = []
    for _attempt in range(1 + retries):
        try:
            ws = sb.create_workspace(task)
            break
        except Exception as e:  # noqa: BLE001 - a workspace that cannot be made is infra
            infra.append(f"create_workspace: {e}")
            time.sleep(0.2)
    if ws is None:
        return ValidationResult(
            Outcome.INFRA_ERROR,
            0.0,
            False,
            None,
            "\n".join(infra)[-LOG_TAIL:],
            None,
            {"backend": getattr(sb, "name", "?")},
            time.monotonic() - t0,
            1 + retries,
            infra,
            None,
            task.id,
        )
    try:
        try:
            apply_patch(ws, patch)
        except PatchError as e:
            return ValidationResult(
                Outcome.FAIL,
                0.0,
                False,
                None,
                f"[jaxrepair] {e}\n",
                None,
                fingerprint(task, sb, None),
                time.monotonic() - t0,
                1,
                infra,
                None,
                task.id,
            )
        res = validate_workspace(task, ws, sb, retries)
        res.infra_errors = infra + res.infra_errors
        res.duration_s = time.monotonic() - t0
        return res
    finally:
        sb.destroy_workspace(ws)

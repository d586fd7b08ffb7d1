"""Tasks: the on-disk format (``<id>/task.toml``, ``<id>/repo/``, ``<id>/fix.patch``) and the
SWE-bench-style JSONL import.

Why: a task must be loaded the same way by the validator, the episodes and the corpus checks,
and a broken task file must say which task and which field is wrong.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BUILD_SYSTEMS",
    "TASK_DIR_BUILD_SYSTEMS",
    "CATEGORIES",
    "SweBenchSource",
    "Task",
    "TaskError",
    "load_task",
    "load_tasks",
    "require_backend",
]

# what a task directory (task.toml) may declare; SWE-bench imports add their own
TASK_DIR_BUILD_SYSTEMS = ("python", "make", "cmake", "npm")
BUILD_SYSTEMS = (*TASK_DIR_BUILD_SYSTEMS, "swebench")
# "train"; "test_id": held out in distribution (unseen breakages of train projects); "test":
# held out of project (projects never seen in training)
SPLITS = ("train", "test_id", "test")
# Error categories a task may declare: the bundled corpus's seven, the paper's "logic",
# "compile" (C sources that do not compile) and "swe-bench" (the SWE-bench import's default).
CATEGORIES = (
    "dependency",
    "import",
    "syntax",
    "signature",
    "type",
    "test",
    "config",
    "logic",
    "compile",
    "swe-bench",
)
SWEBENCH_REPO_PATH = "/testbed"  # where SWE-bench images keep the repository
SWEBENCH_TEST_CMD = "python -m pytest -rA -p no:cacheprovider"


class TaskError(ValueError):
    """A task file is malformed; the message names the task and the field."""

    def __init__(self, task: str, fieldname: str, problem: str):
        super().__init__(f"task {task!r}: field {fieldname!r}: {problem}")
        self.task = task
        self.field = fieldname


@dataclass(frozen=True)
class SweBenchSource:
    """A repository that lives inside a Docker image (SWE-bench style), not on the host.

    The Docker backend copies ``repo_path`` out of ``Task.image`` into a fresh workspace (the
    image already holds the repository checked out at ``base_commit``); validation applies
    ``test_patch`` and runs the FAIL_TO_PASS and PASS_TO_PASS tests.
    """

    repo: str  # e.g. "astropy/astropy"
    base_commit: str
    test_patch: str
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    repo_path: str = SWEBENCH_REPO_PATH
    test_cmd: str = SWEBENCH_TEST_CMD


@dataclass(frozen=True)
class Task:
    """One repair task: a broken repository, how to validate it, and a reference fix."""

    id: str
    category: str
    issue: str
    build: tuple[str, ...]
    timeout_s: float
    protected: tuple[str, ...]
    dependencies: dict[str, str]
    image: str | None
    build_system: str
    split: str
    relevant_files: tuple[str, ...]
    root: Path
    swebench: SweBenchSource | None = field(default=None, compare=False)
    fix_text: str | None = field(default=None, compare=False, repr=False)

    @property
    def repo_dir(self) -> Path:
        """The broken repository on the host (SWE-bench tasks keep theirs in the image)."""
        if self.swebench is not None:
            raise TaskError(
                self.id,
                "repo",
                f"the repository lives inside image {self.image!r} at {self.swebench.repo_path}; "
                "only the Docker backend can materialise it",
            )
        return self.root / "repo"

    @property
    def fix_patch(self) -> str:
        """Text of the reference fix (a unified diff)."""
        if self.fix_text is not None:
            return self.fix_text
        path = self.root / "fix.patch"
        if not path.is_file():
            raise TaskError(self.id, "fix.patch", f"missing file {path}")
        return path.read_bytes().decode("utf-8")  # bytes as written: CRLF lines stay CRLF


def _str(task: str, data: dict, key: str, default: Any = ..., allow_empty: bool = False) -> str:
    if key not in data:
        if default is ...:
            raise TaskError(task, key, "missing")
        return default
    val = data[key]
    if not isinstance(val, str):
        raise TaskError(task, key, f"expected a string, got {type(val).__name__}")
    if not allow_empty and not val.strip():
        raise TaskError(task, key, "must not be empty")
    return val


def _str_list(
    task: str, data: dict, key: str, default: Any = ..., allow_str: bool = False
) -> tuple[str, ...]:
    if key not in data:
        if default is ...:
            raise TaskError(task, key, "missing")
        return tuple(default)
    val = data[key]
    if allow_str and isinstance(val, str):
        val = [val]
    if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
        raise TaskError(task, key, "expected a list of strings")
    return tuple(val)


def _category(task: str, category: str) -> str:
    if category not in CATEGORIES:
        raise TaskError(task, "category", f"{category!r} is not one of {', '.join(CATEGORIES)}")
    return category


def _repo_paths(repo: Path) -> list[str]:
    """Every file (and symlinked directory) under the repo, relative, symlinks not followed:
    the entries the reward's protected-path guard compares."""
    out = []
    for dirpath, dirnames, filenames in os.walk(repo, followlinks=False):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in filenames + links:
            out.append((Path(dirpath) / name).relative_to(repo).as_posix())
    return sorted(out)


def _did_you_mean(glob: str, paths: list[str]) -> str:
    """' (did you mean 'tests/**'?)' when the glob's first component is a near-miss."""
    head, sep, rest = glob.partition("/")
    names = sorted({p.split("/", 1)[0] for p in paths})
    close = difflib.get_close_matches(head, names, n=1)
    return f" (did you mean {close[0] + sep + rest!r}?)" if close else ""


def _check_repo_paths(
    task: str, repo: Path, protected: tuple[str, ...], relevant: tuple[str, ...]
) -> None:
    """Protected globs must each match a repo file and relevant files must exist: a glob that
    matches nothing protects nothing (a patch may then rewrite the tests and earn reward 1),
    and a missing relevant file would silently leave the simplified pipeline's prompt short."""
    from .reward import _glob_regex  # the guard's own matcher (reward imports this module)

    paths = _repo_paths(repo) if protected else []
    for g in protected:
        pat = _glob_regex(g)
        if not any(pat.match(p) for p in paths):
            raise TaskError(
                task,
                "protected",
                f"glob {g!r} matches no file in {repo}{_did_you_mean(g, paths)}",
            )
    for rel in relevant:
        if not rel.strip() or rel.startswith("/") or ".." in Path(rel).parts:
            raise TaskError(task, "relevant_files", f"{rel!r} must be relative to the repo root")
        p = repo / rel
        if p.is_symlink() or not p.is_file():
            what = "is a symlink" if p.is_symlink() else "does not exist"
            raise TaskError(task, "relevant_files", f"{rel!r} {what} in {repo}")


def require_backend(tasks: Task | Iterable[Task], backend: str) -> None:
    """Refuse, before anything runs, a task the backend cannot run: a SWE-bench task's
    repository lives in its Docker image, so only the docker backend can materialise it."""
    for t in [tasks] if isinstance(tasks, Task) else tasks:
        if t.swebench is not None and backend != "docker":
            raise TaskError(
                t.id,
                "build_system",
                f"a SWE-bench task runs only in its Docker image; the {backend!r} backend "
                "cannot run it (use the docker backend: --backend docker or "
                'envs.sandbox = "docker")',
            )


def load_task(task_dir: str | Path) -> Task:
    """Load one task directory; TaskError names the task and the bad field."""
    root = Path(task_dir)
    name = root.name
    toml_path = root / "task.toml"
    if not toml_path.is_file():
        raise TaskError(name, "task.toml", f"missing file {toml_path}")
    try:
        data = tomllib.loads(toml_path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TaskError(name, "task.toml", f"not valid TOML: {e}") from e
    tid = _str(name, data, "id")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", tid):
        raise TaskError(name, "id", f"{tid!r} must be letters, digits, '.', '_' or '-'")
    category = _category(tid, _str(tid, data, "category"))
    issue = _str(tid, data, "issue")
    build = _str_list(tid, data, "build", allow_str=True)
    if not build or not all(c.strip() for c in build):
        raise TaskError(tid, "build", "needs at least one non-empty command")
    timeout = data.get("timeout_s", 120)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise TaskError(tid, "timeout_s", f"expected a positive number, got {timeout!r}")
    protected = _str_list(tid, data, "protected", default=())
    for g in protected:
        if not g.strip():
            raise TaskError(tid, "protected", "a glob must not be empty")
        if g.startswith("/") or ".." in Path(g).parts:
            raise TaskError(tid, "protected", f"glob {g!r} must be relative to the repo root")
    deps = data.get("dependencies", {})
    if not isinstance(deps, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in deps.items()
    ):
        raise TaskError(tid, "dependencies", 'expected a table of exact pins name = "version"')
    sandbox = data.get("sandbox", {})
    if not isinstance(sandbox, dict):
        raise TaskError(tid, "sandbox", "expected a table")
    image = sandbox.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise TaskError(tid, "sandbox.image", "expected a non-empty string")
    build_system = _str(tid, data, "build_system")
    if build_system not in TASK_DIR_BUILD_SYSTEMS:
        choices = ", ".join(repr(b) for b in TASK_DIR_BUILD_SYSTEMS)
        raise TaskError(tid, "build_system", f"{build_system!r} is not one of {choices}")
    split = _str(tid, data, "split", default="train")
    if split not in SPLITS:
        raise TaskError(tid, "split", f"{split!r} is not one of {', '.join(SPLITS)}")
    relevant = _str_list(tid, data, "relevant_files", default=())
    repo = root / "repo"
    if not repo.is_dir():
        raise TaskError(tid, "repo", f"missing directory {repo}")
    _check_repo_paths(tid, repo, protected, relevant)
    return Task(
        id=tid,
        category=category,
        issue=issue,
        build=build,
        timeout_s=float(timeout),
        protected=protected,
        dependencies=dict(deps),
        image=image,
        build_system=build_system,
        split=split,
        relevant_files=relevant,
        root=root,
    )


def _json_list(task: str, rec: dict, key: str) -> tuple[str, ...]:
    val = rec.get(key, [])
    if isinstance(val, str):  # the Hugging Face dataset stores these lists as JSON strings
        try:
            val = json.loads(val) if val.strip() else []
        except json.JSONDecodeError as e:
            raise TaskError(task, key, f"not a JSON list: {e}") from e
    if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
        raise TaskError(task, key, "expected a list of test ids")
    return tuple(val)


def _patch_files(patch: str) -> tuple[str, ...]:
    files = []
    for m in re.finditer(r"^diff --git a/(\S+) b/(\S+)$", patch, re.M):
        files.extend({m.group(1), m.group(2)})
    if not files:
        files = [m.group(1) for m in re.finditer(r"^\+\+\+ b/(\S+)", patch, re.M)]
    return tuple(dict.fromkeys(files))


def swebench_task(rec: dict, root: Path, lineno: int = 0) -> Task:
    """One SWE-bench record -> Task for the Docker backend (the repo lives in the image)."""
    where = f"line {lineno}" if lineno else "record"
    if not isinstance(rec, dict):
        raise TaskError(where, "record", "expected a JSON object")
    iid = rec.get("instance_id")
    if not isinstance(iid, str) or not iid.strip():
        raise TaskError(where, "instance_id", "missing or not a string")
    for key in ("repo", "base_commit", "patch", "test_patch"):
        _str(iid, rec, key)
    f2p = _json_list(iid, rec, "FAIL_TO_PASS")
    p2p = _json_list(iid, rec, "PASS_TO_PASS")
    if not f2p:
        raise TaskError(iid, "FAIL_TO_PASS", "needs at least one test")
    image = rec.get("image") or rec.get("image_name")
    if not isinstance(image, str) or not image.strip():
        raise TaskError(iid, "image", "missing: SWE-bench tasks run only in their Docker image")
    test_cmd = rec.get("test_cmd", SWEBENCH_TEST_CMD)
    if not isinstance(test_cmd, str) or not test_cmd.strip():
        raise TaskError(iid, "test_cmd", "expected a non-empty string")
    timeout = rec.get("timeout_s", 1800)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise TaskError(iid, "timeout_s", f"expected a positive number, got {timeout!r}")
    quoted = " ".join("'" + t.replace("'", "'\\''") + "'" for t in (*f2p, *p2p))
    src = SweBenchSource(
        repo=rec["repo"],
        base_commit=rec["base_commit"],
        test_patch=rec["test_patch"],
        fail_to_pass=f2p,
        pass_to_pass=p2p,
        test_cmd=test_cmd,
    )
    return Task(
        id=iid,
        category=_category(iid, str(rec.get("category", "swe-bench"))),
        issue=str(rec.get("problem_statement", "")),
        build=(f"{test_cmd} {quoted}",),
        timeout_s=float(timeout),
        protected=_patch_files(rec["test_patch"]),
        dependencies={},
        image=image,
        build_system="swebench",
        split=str(rec.get("split", "test")),
        relevant_files=_patch_files(rec["patch"]),
        root=root,
        swebench=src,
        fix_text=rec["patch"],
    )


def is_corpus_manifest(path: Path) -> bool:
    """A .jsonl file whose first record carries the corpus schema (jaxrepair.corpus): a
    real-world corpus manifest, not a SWE-bench import."""
    with open(path) as fh:
        for line in fh:
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(rec, dict) and str(rec.get("schema", "")).startswith(
                    "jaxrepair.corpus/"
                )
    return False


def load_tasks(path: str | Path) -> list[Task]:
    """All tasks under a directory (searched recursively for task.toml), or from a .jsonl file:
    a corpus manifest (materialised from cached snapshots, see jaxrepair.corpus) or a SWE-bench
    import."""
    p = Path(path)
    if p.is_file() and p.suffix == ".jsonl" and is_corpus_manifest(p):
        from ..corpus.manifest import load_manifest  # corpus imports this module

        tasks = load_manifest(p)
    elif p.is_file() and p.suffix == ".jsonl":
        tasks = []
        for lineno, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{p.name}:{lineno}", "record", f"not valid JSON: {e}") from e
            tasks.append(swebench_task(rec, p.parent, lineno))
    elif p.is_dir():
        if (p / "task.toml").is_file():
            return [load_task(p)]
        dirs = sorted(
            {t.parent for t in p.rglob("task.toml") if "repo" not in t.relative_to(p).parts[:-1]}
        )
        tasks = [load_task(d) for d in dirs]
    else:
        raise FileNotFoundError(f"no task directory or .jsonl file at {p}")
    seen: dict[str, Task] = {}
    for t in tasks:
        if t.id in seen:
            raise TaskError(t.id, "id", f"duplicate id (also in {seen[t.id].root})")
        seen[t.id] = t
    return tasks

"""The corpus manifest: SWE-bench-style JSONL records (patches and hashes, never source), and
their materialisation into the task format every other part of jaxrepair reads.

Why: a task is its project's pinned snapshot plus a break patch, so the manifest stays small
and the source comes from the registry (by exact version and hash) into the cache. A record
materialises into ``<cache>/corpus/tasks/<corpus version>/<id>/{task.toml, fix.patch, repo/}``
with ``VERSION`` beside the task directories: the same layout as the bundled corpus, so the
validator, the episodes and the reward fingerprint (which reads ``VERSION``) need no second
code path. The corpus version is a hash of every record, so any change to the manifest gives
every task a new fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from ..envs import deps
from ..envs.reward import PatchError, apply_patch
from ..envs.task import CATEGORIES, SPLITS, TASK_DIR_BUILD_SYSTEMS, Task, TaskError, load_task
from .mirror import MirrorError, require_mirror
from .npm import NpmError, install_node_modules
from .snapshots import SnapshotError, check_snapshot, snapshot
from .sources import SourceError, SourceSpec, fetch

__all__ = [
    "SCHEMA",
    "Record",
    "corpus_version",
    "load_manifest",
    "materialise",
    "read_manifest",
    "record_split",
    "requirements_text",
    "write_manifest",
]

SCHEMA = "jaxrepair.corpus/1"
_FORMAT = "c1"  # bump when materialisation changes what a task directory holds
_checked_trees: set[tuple[str, str]] = set()


IN_DISTRIBUTION_EVERY = 5  # about one in five breakages of a train project is held out


def record_split(project_split: str, break_patch: str) -> str:
    """A record's split: a held-out project's tasks are all "test"; of a train project's,
    those whose break patch hashes to 0 mod IN_DISTRIBUTION_EVERY are "test_id" (held out in
    distribution: the same projects, unseen breakages), the rest "train". Decided by the
    patch alone, so a rebuild or a resumed build assigns the same split."""
    if project_split != "train":
        return project_split
    digest = int(hashlib.sha256(break_patch.encode()).hexdigest()[:8], 16)
    return "test_id" if digest % IN_DISTRIBUTION_EVERY == 0 else "train"


@dataclass(frozen=True)
class Record:
    """One task: where its source comes from, how it is broken and fixed, how it is built."""

    id: str
    project: str
    version: str
    source: SourceSpec
    tree_sha256: str  # hash of the unpacked snapshot (snapshots.tree_sha256)
    build_system: str
    category: str
    kind: str  # the breakage operator, e.g. "swap-comparison"
    build: tuple[str, ...]
    timeout_s: float
    protected: tuple[str, ...]
    relevant_files: tuple[str, ...]
    issue: str
    break_patch: str
    fix_patch: str
    pins: dict[str, str] = field(default_factory=dict)
    split: str = "train"
    tests_ran: int | None = None  # tests the reference fix runs (informational)
    dependency_sources: tuple[SourceSpec, ...] = ()  # what the dependency mirror must hold

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "id": self.id,
            "project": self.project,
            "version": self.version,
            "source": self.source.to_dict(),
            "tree_sha256": self.tree_sha256,
            "build_system": self.build_system,
            "category": self.category,
            "kind": self.kind,
            "build": list(self.build),
            "timeout_s": self.timeout_s,
            "protected": list(self.protected),
            "relevant_files": list(self.relevant_files),
            "issue": self.issue,
            "break_patch": self.break_patch,
            "fix_patch": self.fix_patch,
            "pins": dict(sorted(self.pins.items())),
            "split": self.split,
            "tests_ran": self.tests_ran,
            "dependency_sources": [d.to_dict() for d in self.dependency_sources],
        }

    @classmethod
    def from_dict(cls, rec: object, where: str) -> Record:
        """Parse one record; a bad one raises TaskError naming the task (or line) and field."""
        if not isinstance(rec, dict):
            raise TaskError(where, "record", "expected a JSON object")
        tid = rec.get("id")
        if not isinstance(tid, str) or not tid.strip():
            raise TaskError(where, "id", "missing or not a string")
        if rec.get("schema") != SCHEMA:
            raise TaskError(tid, "schema", f"{rec.get('schema')!r} is not {SCHEMA!r}")

        def s(key: str) -> str:
            v = rec.get(key)
            if not isinstance(v, str) or not v.strip():
                raise TaskError(tid, key, "missing or not a non-empty string")
            return v

        def strs(key: str) -> tuple[str, ...]:
            v = rec.get(key, [])
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise TaskError(tid, key, "expected a list of strings")
            return tuple(v)

        if s("build_system") not in TASK_DIR_BUILD_SYSTEMS:
            raise TaskError(
                tid,
                "build_system",
                f"{rec['build_system']!r} is not one of {TASK_DIR_BUILD_SYSTEMS}",
            )
        if s("category") not in CATEGORIES:
            raise TaskError(
                tid, "category", f"{rec['category']!r} is not one of {', '.join(CATEGORIES)}"
            )
        split = rec.get("split", "train")
        if split not in SPLITS:
            raise TaskError(tid, "split", f"{split!r} is not one of {', '.join(SPLITS)}")
        build = strs("build")
        if not build:
            raise TaskError(tid, "build", "needs at least one command")
        timeout = rec.get("timeout_s", 120)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise TaskError(tid, "timeout_s", f"expected a positive number, got {timeout!r}")
        pins = rec.get("pins", {})
        if not isinstance(pins, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in pins.items()
        ):
            raise TaskError(tid, "pins", 'expected an object of exact pins {"name": "version"}')
        src = rec.get("source")
        if not isinstance(src, dict):
            raise TaskError(tid, "source", "expected an object")
        try:
            source = SourceSpec.from_dict(src)
        except SourceError as e:
            raise TaskError(tid, "source", str(e)) from e
        dep_srcs = rec.get("dependency_sources", [])
        if not isinstance(dep_srcs, list) or not all(isinstance(d, dict) for d in dep_srcs):
            raise TaskError(tid, "dependency_sources", "expected a list of source objects")
        try:
            dependency_sources = tuple(SourceSpec.from_dict(d) for d in dep_srcs)
        except SourceError as e:
            raise TaskError(tid, "dependency_sources", str(e)) from e
        npm_sources = [d.label for d in dependency_sources if d.registry == "npm"]
        is_npm = rec["build_system"] == "npm"
        if len(npm_sources) != (len(dependency_sources) if is_npm else 0):
            raise TaskError(
                tid,
                "dependency_sources",
                "an npm task's dependency sources are its node_modules (all from npm), and only "
                "an npm task has npm dependency sources",
            )
        tests_ran = rec.get("tests_ran")
        if tests_ran is not None and (
            isinstance(tests_ran, bool) or not isinstance(tests_ran, int)
        ):
            raise TaskError(tid, "tests_ran", "expected an integer or null")
        for key in ("break_patch", "fix_patch"):
            if not s(key).startswith("diff --git "):
                raise TaskError(tid, key, "expected a unified diff starting with 'diff --git'")
        return cls(
            id=tid,
            project=s("project"),
            version=s("version"),
            source=source,
            tree_sha256=s("tree_sha256"),
            build_system=rec["build_system"],
            category=rec["category"],
            kind=s("kind"),
            build=build,
            timeout_s=float(timeout),
            protected=strs("protected"),
            relevant_files=strs("relevant_files"),
            issue=s("issue"),
            break_patch=rec["break_patch"],
            fix_patch=rec["fix_patch"],
            pins=dict(pins),
            split=split,
            tests_ran=tests_ran,
            dependency_sources=dependency_sources,
        )


def read_manifest(path: str | Path) -> list[Record]:
    """Every record of a manifest; TaskError names the line (or task) and the field."""
    p = Path(path)
    out: list[Record] = []
    seen: set[str] = set()
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p.name}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(where, "record", f"not valid JSON: {e}") from e
        r = Record.from_dict(rec, where)
        if r.id in seen:
            raise TaskError(r.id, "id", f"duplicate id ({where})")
        seen.add(r.id)
        out.append(r)
    return out


def _line(r: Record) -> str:
    return json.dumps(r.to_dict(), sort_keys=True, ensure_ascii=False)


def write_manifest(path: str | Path, records: list[Record]) -> None:
    """Write records sorted by id, one JSON object per line (atomic replace)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=p.parent)
    with os.fdopen(fd, "w") as fh:
        for r in sorted(records, key=lambda r: r.id):
            fh.write(_line(r) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, p)


def corpus_version(records: list[Record]) -> str:
    """``c1+<12 hex>``: a hash of every record (order-independent)."""
    h = hashlib.sha256()
    for line in sorted(_line(r) for r in records):
        h.update(line.encode() + b"\n")
    return f"{_FORMAT}+{h.hexdigest()[:12]}"


def _source_tree(r: Record) -> Path:
    """The record's snapshot, fetched and unpacked if needed, checked against tree_sha256."""
    try:
        tree, th = snapshot(fetch(r.source))
    except (SourceError, SnapshotError) as e:
        raise TaskError(r.id, "source", str(e)) from e
    if th != r.tree_sha256:
        raise TaskError(
            r.id,
            "tree_sha256",
            f"the snapshot of {r.source.label} hashes to {th}, not {r.tree_sha256}",
        )
    key = (str(tree), r.tree_sha256)
    if key not in _checked_trees:  # once per process: the cached tree was not edited since
        try:
            check_snapshot(tree, r.tree_sha256)
        except SnapshotError as e:
            raise TaskError(r.id, "tree_sha256", str(e)) from e
        _checked_trees.add(key)
    return tree


def _task_toml(r: Record) -> str:
    data = {
        "id": r.id,
        "category": r.category,
        "kind": r.kind,
        "project": r.project,
        "project_version": r.version,
        "build_system": r.build_system,
        "split": r.split,
        "build": list(r.build),
        "timeout_s": r.timeout_s,
        "protected": list(r.protected),
        "relevant_files": list(r.relevant_files),
        "issue": r.issue,
        "dependencies": dict(sorted(r.pins.items())),
    }
    return tomli_w.dumps(data)


def requirements_text(pins: dict[str, str]) -> str:
    """The ``requirements.txt`` a task's repo holds for its pins (sorted, one per line)."""
    return "".join(f"{k}=={v}\n" for k, v in sorted(pins.items()))


def materialise(r: Record, parent: Path) -> Task:
    """The task directory ``parent/<id>`` for a record (made once; atomic), loaded as a Task.

    The snapshot is copied, the break patch applied with ``git apply`` (as every patch in
    jaxrepair is), the pins written as ``requirements.txt`` (when there are any) before it,
    in place of one the release ships (a range, which is not an exact pin).
    """
    root = Path(parent) / r.id
    if (root / "task.toml").is_file():
        return load_task(root)
    tree = _source_tree(r)
    root.parent.mkdir(parents=True, exist_ok=True)
    with deps._file_lock(root.parent / f".{r.id}.lock"):
        if (root / "task.toml").is_file():
            return load_task(root)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root.parent))
        try:
            repo = tmp / "repo"
            shutil.copytree(tree, repo, symlinks=True)
            if r.pins:  # before the break patch: a dependency task's patches edit this file
                # (one the release ships, e.g. jsonpatch's version range, gives way to the pins)
                (repo / deps.REQUIREMENTS).unlink(missing_ok=True)
                (repo / deps.REQUIREMENTS).write_text(requirements_text(r.pins))
            try:
                apply_patch(repo, r.break_patch)
            except PatchError as e:
                raise TaskError(r.id, "break_patch", str(e)) from e
            if r.build_system == "npm" and r.dependency_sources:  # node_modules, hard-linked
                try:
                    install_node_modules(repo, r.dependency_sources)
                except (NpmError, SourceError, SnapshotError) as e:
                    raise TaskError(r.id, "dependency_sources", str(e)) from e
            (tmp / "fix.patch").write_text(r.fix_patch)
            (tmp / "task.toml").write_text(_task_toml(r))
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_task(root)


def load_manifest(path: str | Path, ids: Sequence[str] | None = None) -> list[Task]:
    """Tasks of a manifest (only those named in ``ids``, in that order, when given),
    materialised under ``<cache>/corpus/tasks/<corpus version>/`` (fetching and unpacking
    each project's source once, by exact version and hash; the version is the whole
    manifest's, so a subset gets the same directories and fingerprints); when the records
    name dependency sources, the dependency mirror is built and made this process's package
    index (mirror.require_mirror)."""
    records = read_manifest(path)
    chosen = records
    if ids is not None:
        by_id = {r.id: r for r in records}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise TaskError(missing[0], "id", f"no such task in {path}")
        chosen = [by_id[i] for i in ids]
    specs = list(  # the Python mirror's; an npm task's are its node_modules (materialise)
        dict.fromkeys(d for r in chosen if r.build_system != "npm" for d in r.dependency_sources)
    )
    if specs:
        try:
            require_mirror(specs)
        except (MirrorError, SourceError) as e:
            bad = next(r for r in chosen if r.dependency_sources)
            raise TaskError(bad.id, "dependency_sources", str(e)) from e
    version = corpus_version(records)
    parent = deps.cache_dir() / "corpus" / "tasks" / version
    parent.mkdir(parents=True, exist_ok=True)
    vfile = parent / "VERSION"  # reward.fingerprint reads it: the corpus version of each task
    if not vfile.is_file():
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(version + "\n")
        os.replace(tmp, vfile)
    return [materialise(r, parent) for r in chosen]

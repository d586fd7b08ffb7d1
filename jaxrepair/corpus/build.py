"""Building the corpus: fetch -> snapshot -> break -> validate -> manifest, per project.

    python -m jaxrepair.corpus.build --out corpus.jsonl [--project six ...] [--quota 2]

Why each step: the source is fetched by exact version and hash and unpacked once (sources,
snapshots); the unbroken tree must pass its own tests in the sandbox first (else the project's
build does not work offline and no task from it could be fixed); each candidate breakage is
run once and kept only if the build fails (the tests notice it); the survivors are then
validated exactly as ``jaxrepair envs validate`` validates any corpus (envs.corpus_validate:
broken fails and the reference fix passes with reward 1, ``repeats`` times each, in the real
sandbox) and only tasks that pass every repeat reach the manifest. The manifest is rewritten
after every project, and a project whose pinned source already has records is skipped unless
``--rebuild``: an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..envs.corpus_validate import validate_corpus
from ..envs.reward import _glob_regex, count_tests
from ..envs.sandbox import Sandbox, copy_repo, make_sandbox, remove_tree
from .manifest import Record, materialise, read_manifest, write_manifest
from .mirror import build_mirror, use_mirror
from .projects import PROJECTS, Project
from .python_breakages import Breakage, breakages
from .snapshots import snapshot
from .sources import fetch

__all__ = ["ProjectResult", "build_corpus", "build_project", "issue_text", "main"]

CATEGORY_ORDER = ("import", "signature", "logic", "type", "syntax")


@dataclass
class ProjectResult:
    """What one project's build made, and where its time went."""

    project: str
    records: list[Record] = field(default_factory=list)
    screened: int = 0  # candidate breakages run once
    caught: int = 0  # of those, the ones the build failed on
    validated_ok: int = 0
    baseline_tests: int | None = None
    problem: str | None = None  # why the project produced nothing (its own build fails, ...)
    seconds: dict[str, float] = field(default_factory=dict)


def _log(msg: str) -> None:
    print(f"[corpus] {msg}", file=sys.stderr, flush=True)


def _matches(rel: str, globs: tuple[str, ...]) -> bool:
    """The reward guard's glob semantics: ``*`` stays within a directory, ``**`` crosses."""
    return any(_glob_regex(g).match(rel) for g in globs)


def _files(tree: Path) -> list[str]:
    return sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())


def _clean(output: str) -> str:
    """Build output without what differs between runs (timings, addresses) and without
    pytest's warnings summary (deprecation noise that would fill the issue's tail)."""
    output = re.sub(r"(?ms)^=+ warnings summary =+\n.*?(?=^=)", "", output)
    output = re.sub(r" in \d+\.\d+s( \(\d+:\d+:\d+\))?", "", output)
    # the host interpreter's stdlib (bound into the sandbox) -> a machine-independent path
    output = re.sub(r"/[^\s:'\"]*/lib/(python3\.\d+)/", r"/usr/lib/\1/", output)
    return re.sub(r"0x[0-9a-f]{6,}", "0x7f0000000000", output)


def issue_text(
    commands: tuple[str, ...], output: str, max_lines: int = 40, max_chars: int = 3000
) -> str:
    """The issue an agent sees: the failing command and the tail of its real output."""
    lines = _clean(output).rstrip().splitlines()
    tail = "\n".join(lines[-max_lines:])
    if len(tail) > max_chars:
        tail = tail[-max_chars:]
        tail = tail[tail.find("\n") + 1 :]
    cmd = " && ".join(commands)
    return (
        f"The build fails: `{cmd}` exits with an error.\n\nBuild output (tail):\n```\n{tail}\n```\n"
    )


def _run_build(
    sandbox: Sandbox, tree: Path, project: Project, edit: Breakage | None
) -> tuple[str, str, float]:
    """(outcome, output of the last command run, seconds): the project's build on a copy of
    ``tree`` (with ``edit`` applied) in the sandbox; outcome is pass, fail, timeout or infra."""
    t0 = time.monotonic()
    ws = copy_repo(tree, prefix="jaxrepair-corpus-")
    try:
        if edit is not None:
            (ws / edit.path).write_text(edit.broken)
        out = ""
        for cmd in project.build:
            res = sandbox.run(ws, cmd, project.timeout_s, dict(project.pins))
            out = res.output
            if res.infra_error is not None:
                return "infra", res.infra_error, time.monotonic() - t0
            if res.timed_out:
                return "timeout", out, time.monotonic() - t0
            if res.exit_code != 0:
                return "fail", out, time.monotonic() - t0
        return "pass", out, time.monotonic() - t0
    finally:
        remove_tree(ws)


def _relevant(edit: Breakage, output: str, files: set[str]) -> tuple[str, ...]:
    found = [edit.path]
    for m in re.finditer(r"([\w./-]+\.py)\b", output):
        rel = m.group(1).removeprefix("/workspace/").removeprefix("./")
        if rel in files:
            found.append(rel)
    return tuple(dict.fromkeys(found))[:5]


def _task_id(project: Project, edit: Breakage) -> str:
    h = hashlib.sha256(edit.break_patch.encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", project.name)
    return f"{name}-{project.source.version}-{edit.category}-{h}"


def build_project(
    project: Project,
    sandbox: Sandbox,
    quota: int = 2,
    max_tries: int = 6,
    repeats: int = 3,
    workers: int = 2,
    seed: int = 0,
    progress: bool = True,
    categories: tuple[str, ...] = CATEGORY_ORDER,
) -> ProjectResult:
    """The validated records of one project: up to ``quota`` per category, from at most
    ``max_tries`` candidates per category run once each, validated ``repeats`` times."""
    mirror = (  # the pinned dependencies, offline, through envs.deps
        use_mirror(build_mirror(project.dependencies))
        if project.dependencies
        else contextlib.nullcontext()
    )
    with mirror:
        return _build_project(
            project, sandbox, quota, max_tries, repeats, workers, seed, progress, categories
        )


def _build_project(
    project: Project,
    sandbox: Sandbox,
    quota: int,
    max_tries: int,
    repeats: int,
    workers: int,
    seed: int,
    progress: bool,
    categories: tuple[str, ...],
) -> ProjectResult:
    res = ProjectResult(project.name)
    t0 = time.monotonic()
    archives = fetch(project.source)
    res.seconds["fetch"] = time.monotonic() - t0
    t0 = time.monotonic()
    tree, tree_hash = snapshot(archives)
    res.seconds["snapshot"] = time.monotonic() - t0
    files = _files(tree)
    protected = tuple(g for g in project.protected if any(_matches(f, (g,)) for f in files))
    _log(f"{project.source.label}: {len(files)} files, tree {tree_hash[:12]}")

    outcome, out, secs = _run_build(sandbox, tree, project, None)
    res.seconds["baseline"] = secs
    res.baseline_tests = count_tests(out)
    if outcome != "pass":
        res.problem = f"the unbroken project fails its own build ({outcome}):\n{out[-1500:]}"
        _log(f"{project.name}: SKIPPED, {res.problem}")
        return res
    _log(f"{project.name}: baseline passes ({res.baseline_tests} tests, {secs:.1f}s)")

    # never a protected file (a test): its fix would trip the protected-path guard
    sources = {
        f: (tree / f).read_text()
        for f in files
        if _matches(f, project.sources) and not _matches(f, protected)
    }
    sources = {f: t for f, t in sources.items() if "\r" not in t}
    tests = "\n".join(
        (tree / f).read_text(errors="replace")
        for f in files
        if f.endswith(".py") and _matches(f, protected)
    )
    cands = breakages(sources, tests, seed=seed)
    _log(
        f"{project.name}: {sum(map(len, cands.values()))} candidate breakages in "
        f"{len(sources)} files ({', '.join(f'{c}={len(v)}' for c, v in cands.items())})"
    )
    t0 = time.monotonic()
    kept: list[tuple[Breakage, str]] = []
    for cat in categories:
        got = 0
        for edit in cands.get(cat, [])[:max_tries]:
            if got >= quota:
                break
            res.screened += 1
            outcome, out, _ = _run_build(sandbox, tree, project, edit)
            if outcome == "infra":
                _log(f"{project.name}: sandbox infrastructure error, candidate skipped: {out}")
            if outcome != "fail":
                continue  # the tests did not notice it (or it hung, or the sandbox failed)
            res.caught += 1
            kept.append((edit, out))
            got += 1
        _log(f"{project.name}: {cat}: {got} caught by the tests")
    res.seconds["screen"] = time.monotonic() - t0

    records = []
    for edit, out in kept:
        records.append(
            Record(
                id=_task_id(project, edit),
                project=project.name,
                version=project.source.version,
                source=project.source,
                tree_sha256=tree_hash,
                build_system=project.build_system,
                category=edit.category,
                kind=edit.kind,
                build=project.build,
                timeout_s=project.timeout_s,
                protected=protected,
                relevant_files=_relevant(edit, out, set(files)),
                issue=issue_text(project.build, out),
                break_patch=edit.break_patch,
                fix_patch=edit.fix_patch,
                pins=dict(project.pins),
                split=project.split,
                dependency_sources=project.dependencies,
            )
        )
    if not records:
        res.problem = "no candidate breakage was caught by the tests"
        return res
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="jaxrepair-corpus-tasks-") as tmp:
        tasks = [materialise(r, Path(tmp)) for r in records]
        report = validate_corpus(
            tasks, sandbox, repeats=repeats, workers=workers, progress=progress, print_summary=False
        )
    res.seconds["validate"] = time.monotonic() - t0
    by_id = {t.id: t for t in report.tasks}
    for r in records:
        rep = by_id[r.id]
        if rep.ok:
            res.records.append(replace(r, tests_ran=rep.tests_ran))  # the reference's count
        else:
            _log(f"{r.id}: dropped: {'; '.join(rep.problems[:2])[:300]}")
    res.validated_ok = len(res.records)
    _log(
        f"{project.name}: {res.validated_ok}/{len(records)} validated ({repeats} repeats) in "
        f"{sum(res.seconds.values()):.0f}s"
    )
    return res


def build_corpus(
    out: Path,
    projects: list[Project],
    sandbox: Sandbox | None = None,
    rebuild: bool = False,
    on_project: Callable[[ProjectResult], None] | None = None,
    **kw,
) -> list[ProjectResult]:
    """Build (or resume) a manifest at ``out`` from ``projects``; rewritten after each one."""
    sb = sandbox if sandbox is not None else make_sandbox("local")
    records = read_manifest(out) if out.is_file() else []
    results = []
    for p in projects:
        mine = [r for r in records if r.project == p.name]
        if mine and not rebuild and all(r.source == p.source for r in mine):
            _log(f"{p.name}: {len(mine)} records already in {out.name}; skipped (--rebuild redoes)")
            continue
        res = build_project(p, sb, **kw)
        records = [r for r in records if r.project != p.name] + res.records
        write_manifest(out, records)
        results.append(res)
        if on_project is not None:
            on_project(res)
    return results


def print_summary(results: list[ProjectResult], out: Path) -> None:
    """Per project: tasks per category, screening yield and seconds per stage."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"corpus build -> {out}")
    cols = (
        "project",
        "tasks",
        *CATEGORY_ORDER,
        "caught/screened",
        "tests",
        "fetch s",
        "screen s",
        "validate s",
    )
    for c in cols:
        table.add_column(c, justify="left" if c == "project" else "right")
    for r in results:
        per = {c: sum(1 for x in r.records if x.category == c) for c in CATEGORY_ORDER}
        s = r.seconds
        table.add_row(
            r.project + (" (skipped)" if r.problem and not r.records else ""),
            str(len(r.records)),
            *[str(per[c]) for c in CATEGORY_ORDER],
            f"{r.caught}/{r.screened}",
            str(r.baseline_tests),
            f"{s.get('fetch', 0) + s.get('snapshot', 0):.1f}",
            f"{s.get('screen', 0):.0f}",
            f"{s.get('validate', 0):.0f}",
        )
    Console(stderr=True, width=180).print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the manifest (.jsonl) to write")
    ap.add_argument("--project", action="append", choices=sorted(PROJECTS), help="only these")
    ap.add_argument("--quota", type=int, default=2, help="tasks per category per project")
    ap.add_argument("--max-tries", type=int, default=6, help="candidates run per category")
    ap.add_argument("--repeats", type=int, default=3, help="validation repeats")
    ap.add_argument("--workers", type=int, default=2, help="validation threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rebuild", action="store_true", help="redo projects already in --out")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.out.suffix != ".jsonl":
        ap.error("--out must be a .jsonl file")
    projects = [PROJECTS[n] for n in (args.project or sorted(PROJECTS))]
    t0 = time.monotonic()
    results = build_corpus(
        args.out,
        projects,
        rebuild=args.rebuild,
        quota=args.quota,
        max_tries=args.max_tries,
        repeats=args.repeats,
        workers=args.workers,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print_summary(results, args.out)
    _log(f"done in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

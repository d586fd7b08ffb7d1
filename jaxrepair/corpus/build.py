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
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..envs import deps
from ..envs.corpus_validate import validate_corpus
from ..envs.reward import _glob_regex, count_tests
from ..envs.sandbox import Sandbox, copy_repo, make_sandbox, remove_tree
from ..envs.task import TaskError
from ..errors import UserError
from . import c_breakages, drift, js_breakages, python_breakages
from .build_options import add_build_arguments
from .manifest import (
    Record,
    materialise,
    read_manifest,
    record_split,
    requirements_text,
    write_manifest,
)
from .mirror import build_mirror, use_mirror
from .npm import install_node_modules
from .projects import PROJECTS, NpmProject, Project
from .python_breakages import Breakage
from .snapshots import snapshot
from .sources import fetch

__all__ = ["ProjectResult", "build_corpus", "build_project", "issue_text", "main", "run"]

CATEGORY_ORDER = ("import", "signature", "logic", "type", "syntax", "config", "dependency")
# which breakage generator a build system's projects get, and which files hold their tests
_GENERATORS = {
    "python": (python_breakages.breakages, (".py",)),
    "make": (c_breakages.breakages, c_breakages.C_SUFFIXES),
    "cmake": (c_breakages.breakages, c_breakages.C_SUFFIXES),
    "npm": (js_breakages.breakages, js_breakages.JS_SUFFIXES),
}


@dataclass
class ProjectResult:
    """What one project's build made, and where its time went."""

    project: str
    build_system: str = "python"
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
    output = re.sub(r"\d+\.\d+ sec\b", "0.00 sec", output)  # ctest's per-test and total times
    # the host interpreter's stdlib (bound into the sandbox) -> a machine-independent path
    output = re.sub(r"/[^\s:'\"]*/lib/(python3\.\d+)/", r"/usr/lib/\1/", output)
    return re.sub(r"0x[0-9a-f]{6,}", "0x7f0000000000", output)


# a compiler's, linker's or CMake's error line: where a C build's failure is stated (with
# parallel make and warnings it is rarely in the output's last lines)
_C_ERROR = re.compile(
    r"^\S+:\d+(?::\d+)?: (?:fatal )?error:|undefined reference to|^CMake Error|"
    r"^\S*(?:collect2|cc1\w*): (?:fatal )?error:",
    re.M,
)


def issue_text(
    commands: tuple[str, ...], output: str, max_lines: int = 40, max_chars: int = 3000
) -> str:
    """The issue an agent sees: the failing command and the tail of its real output (from the
    first compiler or CMake error, when there is one before the tail)."""
    lines = _clean(output).rstrip().splitlines()
    first = next((i for i, ln in enumerate(lines) if _C_ERROR.search(ln)), None)
    if first is not None and first < len(lines) - max_lines:
        start = max(0, first - 3)
        tail = "\n".join(lines[start : start + max_lines - 2] + ["[...]", *lines[-1:]])
    else:
        tail = "\n".join(lines[-max_lines:])
    if len(tail) > max_chars:
        tail = tail[-max_chars:]
        tail = tail[tail.find("\n") + 1 :]
    cmd = " && ".join(commands)
    return (
        f"The build fails: `{cmd}` exits with an error.\n\nBuild output (tail):\n```\n{tail}\n```\n"
    )


@dataclass(frozen=True)
class _Run:
    """One build of a tree: pass, fail, timeout or infra; the output of the last command run;
    the index of that command (where a failing build stopped); seconds."""

    outcome: str
    output: str
    step: int
    seconds: float


def _run_build(sandbox: Sandbox, tree: Path, project: Project, edit: Breakage | None) -> _Run:
    """The project's build on a copy of ``tree`` (with ``edit`` applied) in the sandbox."""
    t0 = time.monotonic()
    ws = copy_repo(tree, prefix="jaxrepair-corpus-")
    try:
        pins = dict(project.pins)
        if pins:  # the requirements.txt a task's repo holds (a dependency edit changes it)
            (ws / deps.REQUIREMENTS).unlink(missing_ok=True)
            (ws / deps.REQUIREMENTS).write_text(requirements_text(pins))
        if edit is not None:
            (ws / edit.path).write_bytes(edit.broken.encode())  # line ends kept
        if pins:
            pins = deps.read_pins(ws)
        if isinstance(project, NpmProject):  # the pinned test runner, as a task's repo has it
            install_node_modules(ws, project.node_modules, link=False)
        out = ""
        for step, cmd in enumerate(project.build):
            try:
                res = sandbox.run(ws, cmd, project.timeout_s, pins)
            except deps.DepsError as e:  # a pin the mirror lacks fails as the reward's build does
                out = f"[jaxrepair] dependency error: {e}\n"
                return _Run("fail", out, step, time.monotonic() - t0)
            out = res.output
            if res.infra_error is not None:
                return _Run("infra", res.infra_error, step, time.monotonic() - t0)
            if res.timed_out:
                return _Run("timeout", out, step, time.monotonic() - t0)
            if res.exit_code != 0:
                return _Run("fail", out, step, time.monotonic() - t0)
        return _Run("pass", out, len(project.build) - 1, time.monotonic() - t0)
    finally:
        remove_tree(ws)


def _relevant(edit: Breakage, output: str, files: set[str]) -> tuple[str, ...]:
    """The broken file, then the repo files the output names (on its error lines, when a
    compiler or CMake reported errors: warnings elsewhere name files that are fine)."""
    errors = [ln for ln in output.splitlines() if _C_ERROR.search(ln)]
    text = "\n".join(errors) if errors else output
    found = [edit.path]
    for m in re.finditer(
        r"([\w./-]+\.(?:py|c|h|cc|cpp|cxx|hpp|js|cjs|mjs|json)|[\w./-]*CMakeLists\.txt)\b", text
    ):
        rel = m.group(1).removeprefix("/workspace/").removeprefix("./")
        if rel in files:
            found.append(rel)
    return tuple(dict.fromkeys(found))[:5]


def _text(path: Path) -> str | None:
    """A source file's exact text, or None when it is not UTF-8 (no text diff could patch it)."""
    try:
        return path.read_bytes().decode()  # line ends as they are: the patch must match bytes
    except UnicodeDecodeError:
        return None


def _task_id(project: Project, edit: Breakage) -> str:
    h = hashlib.sha256(edit.break_patch.encode()).hexdigest()[:8]
    # a task id is letters, digits, ".", "_" and "-" (Debian versions hold "+" and "~")
    name_version = re.sub(r"[^A-Za-z0-9._-]", "-", f"{project.name}-{project.source.version}")
    return f"{name_version}-{edit.category}-{h}"


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
        use_mirror(build_mirror(drift.mirror_sources(project)))
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
    res = ProjectResult(project.name, project.build_system)
    t0 = time.monotonic()
    archives = fetch(project.source)
    res.seconds["fetch"] = time.monotonic() - t0
    t0 = time.monotonic()
    tree, tree_hash = snapshot(archives)
    res.seconds["snapshot"] = time.monotonic() - t0
    files = _files(tree)
    protected = tuple(g for g in project.protected if any(_matches(f, (g,)) for f in files))
    if isinstance(project, NpmProject):  # installed after the snapshot: the test runner
        protected += tuple(g for g in project.protected if g.startswith("node_modules/"))
    _log(f"{project.source.label}: {len(files)} files, tree {tree_hash[:12]}")

    base = _run_build(sandbox, tree, project, None)
    res.seconds["baseline"] = base.seconds
    res.baseline_tests = count_tests(base.output)
    if base.outcome != "pass":
        res.problem = (
            f"the unbroken project fails its own build ({base.outcome}):\n{base.output[-1500:]}"
        )
        _log(f"{project.name}: SKIPPED, {res.problem}")
        return res
    _log(f"{project.name}: baseline passes ({res.baseline_tests} tests, {base.seconds:.1f}s)")

    generate, test_suffixes = _GENERATORS[project.build_system]
    # never a protected file (a test): its fix would trip the protected-path guard
    sources = {
        f: text
        for f in files
        if _matches(f, project.sources) and not _matches(f, protected)
        # not CRLF files: no task from one has been validated end to end yet
        if (text := _text(tree / f)) is not None and "\r" not in text
    }
    tests = "\n".join(
        (tree / f).read_text(errors="replace")
        for f in files
        if f.endswith(test_suffixes) and _matches(f, protected)
    )
    cands = generate(sources, tests, seed=seed)
    if project.build_system == "python":
        cands.update(drift.breakages(project))  # pins moved to other releases
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
            run = _run_build(sandbox, tree, project, edit)
            if run.outcome == "infra":
                _log(
                    f"{project.name}: sandbox infrastructure error, candidate skipped: {run.output}"
                )
            if run.outcome != "fail":
                continue  # the tests did not notice it (or it hung, or the sandbox failed)
            if cat == "logic" and run.step < project.test_step:
                continue  # a logic error the compiler rejects is not a logic error
            res.caught += 1
            kept.append((edit, run.output))
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
                split=record_split(project.split, edit.break_patch),
                dependency_sources=drift.mirror_sources(project)
                + (project.node_modules if isinstance(project, NpmProject) else ()),
            )
        )
    if not records:
        res.problem = "no candidate breakage was caught by the tests"
        return res
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="jaxrepair-corpus-tasks-") as tmp:
        tasks = []
        for r in list(records):
            try:
                tasks.append(materialise(r, Path(tmp)))
            except TaskError as e:  # e.g. a patch git apply refuses: never a task
                _log(f"{r.id}: dropped: {e}")
                records.remove(r)
        if not records:
            res.problem = "no caught breakage could be made into a task"
            return res
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
    runs = [d for t in report.tasks for d in t.durations_s]  # empty when every run crashed
    median = statistics.median(runs) if runs else float("nan")
    _log(
        f"{project.name}: {res.validated_ok}/{len(records)} validated ({repeats} repeats, "
        f"median {median:.1f}s a run) in {sum(res.seconds.values()):.0f}s"
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
    """Per project (then per build system): tasks per category, screening yield, seconds."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"corpus build -> {out}")
    cols = (
        "project",
        "build",
        "tasks",
        *CATEGORY_ORDER,
        "caught/screened",
        "tests",
        "fetch s",
        "screen s",
        "validate s",
    )
    for c in cols:
        table.add_column(c, justify="left" if c in ("project", "build") else "right")
    by_system: dict[str, list[ProjectResult]] = {}
    for r in results:
        by_system.setdefault(r.build_system, []).append(r)
    rows = [
        (r.project + (" (skipped)" if r.problem and not r.records else ""), [r]) for r in results
    ]
    if len(by_system) > 1:
        rows += [(f"all {bs}", rs) for bs, rs in sorted(by_system.items())]
    for label, rs in rows:
        recs = [x for r in rs for x in r.records]
        secs = {
            k: sum(r.seconds.get(k, 0.0) for r in rs)
            for k in ("fetch", "snapshot", "screen", "validate")
        }
        tests = [r.baseline_tests for r in rs if r.baseline_tests is not None]
        table.add_row(
            label,
            rs[0].build_system,
            str(len(recs)),
            *[str(sum(1 for x in recs if x.category == c)) for c in CATEGORY_ORDER],
            f"{sum(r.caught for r in rs)}/{sum(r.screened for r in rs)}",
            str(sum(tests)) if tests else "-",
            f"{secs['fetch'] + secs['snapshot']:.1f}",
            f"{secs['screen']:.0f}",
            f"{secs['validate']:.0f}",
            style="bold" if label.startswith("all ") else None,
        )
    Console(stderr=True, width=200).print(table)


def run(args: argparse.Namespace) -> int:
    """Build the manifest the parsed options (build_options) describe; print the summary."""
    if args.out.suffix != ".jsonl":
        raise UserError(f"--out {args.out}: the manifest must be a .jsonl file")
    unknown = [n for n in args.project or () if n not in PROJECTS]
    if unknown:
        raise UserError(
            f"--project {unknown[0]!r}: no such project; known: {', '.join(sorted(PROJECTS))}"
        )
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_build_arguments(ap)
    try:
        return run(ap.parse_args(argv))
    except UserError as e:
        print(f"jaxrepair.corpus.build: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

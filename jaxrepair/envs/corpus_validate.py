"""Corpus validation: every task's broken repo fails its build and the reference fix passes,
each ``repeats`` times, so broken, unfixable and flaky tasks are caught before training.

Why: a reward is only as good as its task; a task is valid when, in the
sandbox, the unfixed repo fails ``build``, the repo with ``fix.patch`` passes, and both
results repeat. ``jaxrepair envs validate`` wires this to the command line.
"""

from __future__ import annotations

import random
import re
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from .protocol import Outcome
from .reward import ValidationResult, validate
from .sandbox import Sandbox, make_sandbox
from .task import Task, TaskError, is_corpus_manifest, load_tasks, require_backend

__all__ = [
    "CorpusReport",
    "TaskReport",
    "load_for_validation",
    "print_report",
    "project_of",
    "stratified_sample",
    "validate_corpus",
]

T = TypeVar("T")


@dataclass
class TaskReport:
    """The runs of one task: outcomes of the broken repo and of the reference fix."""

    id: str
    category: str
    build_system: str
    split: str
    broken: list[str] = field(default_factory=list)  # outcome per repeat (want "fail")
    fixed: list[str] = field(default_factory=list)  # outcome per repeat (want "pass", reward 1)
    fixed_guards: list[str | None] = field(default_factory=list)
    durations_s: list[float] = field(default_factory=list)
    tests_ran: int | None = None
    problems: list[str] = field(default_factory=list)
    fingerprint: dict | None = None

    @property
    def infra(self) -> bool:
        return Outcome.INFRA_ERROR in self.broken or Outcome.INFRA_ERROR in self.fixed

    @property
    def flaky(self) -> bool:
        """Repeats disagree (ignoring infra errors, which are reported separately)."""
        b = {o for o in self.broken if o != Outcome.INFRA_ERROR}
        f = {o for o in self.fixed if o != Outcome.INFRA_ERROR}
        return len(b) > 1 or len(f) > 1

    @property
    def ok(self) -> bool:
        return (
            bool(self.broken)
            and bool(self.fixed)
            and all(o == Outcome.FAIL for o in self.broken)
            and all(o == Outcome.PASS for o in self.fixed)
            and all(g is None for g in self.fixed_guards)
        )

    @property
    def median_s(self) -> float:
        return statistics.median(self.durations_s) if self.durations_s else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(ok=self.ok, flaky=self.flaky, infra=self.infra, median_s=self.median_s)
        return d


@dataclass
class CorpusReport:
    sandbox: str
    repeats: int
    tasks: list[TaskReport]
    wall_s: float

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tasks)

    def summary(self) -> list[dict]:
        """One row per (category, build system): count, ok, flaky, infra, median seconds."""
        groups: dict[tuple[str, str], list[TaskReport]] = {}
        for t in self.tasks:
            groups.setdefault((t.category, t.build_system), []).append(t)
        rows = []
        for (cat, bs), ts in sorted(groups.items()):
            durs = [d for t in ts for d in t.durations_s]
            rows.append(
                {
                    "category": cat,
                    "build_system": bs,
                    "count": len(ts),
                    "ok": sum(t.ok for t in ts),
                    "flaky": sum(t.flaky for t in ts),
                    "infra": sum(t.infra for t in ts),
                    "median_s": statistics.median(durs) if durs else 0.0,
                }
            )
        return rows

    def by_build_system(self) -> list[dict]:
        """One row per build system: tasks, ok, failed ids, the median seconds of one run
        (a build of the broken or the fixed tree) and of one task's validation (its broken
        and fixed runs together, per repeat)."""
        groups: dict[str, list[TaskReport]] = {}
        for t in self.tasks:
            groups.setdefault(t.build_system, []).append(t)
        rows = []
        for bs, ts in sorted(groups.items()):
            runs = [d for t in ts for d in t.durations_s]
            per_task = [sum(t.durations_s) / self.repeats for t in ts if t.durations_s]
            rows.append(
                {
                    "build_system": bs,
                    "count": len(ts),
                    "ok": sum(t.ok for t in ts),
                    "failed": [t.id for t in ts if not t.ok],
                    "median_run_s": statistics.median(runs) if runs else 0.0,
                    "median_task_s": statistics.median(per_task) if per_task else 0.0,
                    "total_run_s": sum(runs),
                }
            )
        return rows

    def failures(self) -> list[TaskReport]:
        return [t for t in self.tasks if not t.ok]

    def to_dict(self) -> dict:
        return {
            "sandbox": self.sandbox,
            "repeats": self.repeats,
            "wall_s": self.wall_s,
            "ok": self.ok,
            "summary": self.summary(),
            "by_build_system": self.by_build_system(),
            "tasks": [t.to_dict() for t in self.tasks],
        }


def project_of(item: Task) -> str:
    """The project a task (or manifest record) comes from: its id less ``-<category>-<tag>``
    (a manifest's ``<project>-<version>-<category>-<hex>`` gives ``<project>-<version>``, a
    bundled task's ``<project>-<category>-<n>`` its project); the id when it has no such
    suffix."""
    m = re.match(rf"^(.+)-{re.escape(item.category)}-[^-]+$", item.id)
    return m.group(1) if m else item.id


def _draw_order(items: list[T], rng: random.Random) -> list[T]:
    """One build system's tasks in the order a sample takes them: round robin over its
    projects (in a seeded order); at each turn the project gives a seeded-random task of the
    category taken least so far in this build system (among the categories it has left)."""
    by_project: dict[str, dict[str, list[T]]] = {}
    for it in sorted(items, key=lambda t: t.id):
        by_project.setdefault(project_of(it), {}).setdefault(it.category, []).append(it)
    for cats in by_project.values():
        for lst in cats.values():
            rng.shuffle(lst)
    projects = sorted(by_project)
    rng.shuffle(projects)
    categories = sorted({it.category for it in items})
    rank = {c: i for i, c in enumerate(rng.sample(categories, len(categories)))}
    taken = dict.fromkeys(categories, 0)
    order: list[T] = []
    while len(order) < len(items):
        for p in projects:
            cats = by_project[p]
            if not cats:
                continue
            c = min(cats, key=lambda c: (taken[c], rank[c]))
            order.append(cats[c].pop())
            taken[c] += 1
            if not cats[c]:
                del cats[c]
    return order


def stratified_sample(items: Sequence[T], n: int, seed: int = 0) -> list[T]:
    """``n`` of ``items`` (tasks or manifest records: ``id``, ``category``,
    ``build_system``), spread first over build systems (round robin, so each build system
    present gets ``n // systems`` or more when it has them), then within a build system over
    its projects (round robin, so ``n`` large enough covers every project), then over
    categories (the least taken first). Deterministic for a seed; a build system's picks
    depend only on its own tasks, so adding a manifest of another build system leaves them
    unchanged, and a larger ``n`` keeps every task a smaller one took. Sorted by id."""
    if n < 0:
        raise ValueError("sample size must be >= 0")
    groups: dict[str, list[T]] = {}
    for it in items:
        groups.setdefault(it.build_system, []).append(it)
    orders = [_draw_order(groups[bs], random.Random(f"{seed}:{bs}")) for bs in sorted(groups)]
    picked: list[T] = []
    for i in range(max((len(o) for o in orders), default=0)):
        for o in orders:
            if i < len(o) and len(picked) < n:
                picked.append(o[i])
    return sorted(picked, key=lambda t: t.id)


def _uses_package_index(task: Task) -> bool:
    """Whether a (non-manifest) task pins packages from the package index, which a corpus
    manifest's dependency mirror replaces for the whole process."""
    from . import deps

    if task.dependencies:
        return True
    if task.swebench is not None:
        return False
    try:
        return bool(deps.read_pins(task.repo_dir))
    except deps.DepsError:
        return True


def load_for_validation(
    paths: Sequence[str | Path],
    task_ids: Sequence[str] = (),
    sample: int | None = None,
    seed: int = 0,
) -> list[Task]:
    """The tasks of one or more sources (task folders, corpus manifests, SWE-bench imports)
    as one set: only ``task_ids`` when given, then a ``stratified_sample`` of ``sample``.
    A manifest is sampled on its records, so only the chosen tasks are fetched and
    materialised. Refused (TaskError): an id in two sources, an unknown ``task_ids`` entry,
    and a manifest with a dependency mirror together with tasks that pin packages from the
    default package index (one package index per process)."""
    from ..corpus.manifest import load_manifest, read_manifest

    items: list = []
    origin: dict[str, Path] = {}
    manifests: dict[Path, list] = {}
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.suffix == ".jsonl" and is_corpus_manifest(p):
            got = manifests[p] = read_manifest(p)
        else:
            got = load_tasks(p)
        for it in got:
            if it.id in origin:
                raise TaskError(it.id, "id", f"duplicate id: in {origin[it.id]} and in {p}")
            origin[it.id] = p
            items.append(it)
    if task_ids:
        by_id = {it.id: it for it in items}
        for tid in task_ids:
            if tid not in by_id:
                where = ", ".join(str(Path(p)) for p in paths)
                raise TaskError(tid, "--task", f"no such task in {where}")
        items = [by_id[tid] for tid in dict.fromkeys(task_ids)]
    if sample is not None:
        items = stratified_sample(items, sample, seed)
    chosen: dict[Path, list] = {}
    for it in items:
        if origin[it.id] in manifests:
            chosen.setdefault(origin[it.id], []).append(it)
    mirrored = [
        r for rs in chosen.values() for r in rs if r.build_system != "npm" and r.dependency_sources
    ]
    if mirrored:
        clash = next((it for it in items if isinstance(it, Task) and _uses_package_index(it)), None)
        if clash is not None:
            raise TaskError(
                clash.id,
                "dependencies",
                f"pins packages from the package index, but {mirrored[0].id} "
                f"({origin[mirrored[0].id]}) needs its corpus's dependency mirror as the "
                "process's package index; validate them in separate runs",
            )
    made: dict[str, Task] = {}
    for p, rs in chosen.items():
        for t in load_manifest(p, ids=[r.id for r in rs]):
            made[t.id] = t
    return [made.get(it.id, it) for it in items]


def _one(task: Task, variant: str, sandbox: Sandbox) -> ValidationResult:
    patch = task.fix_patch if variant == "fixed" else ""
    return validate(task, patch, sandbox=sandbox)


def validate_corpus(
    tasks: Sequence[Task],
    sandbox_kind: str | Sandbox = "local",
    repeats: int = 3,
    workers: int = 2,
    sample: int | None = None,
    seed: int = 0,
    progress: bool = True,
    print_summary: bool = True,
) -> CorpusReport:
    """Validate tasks (broken must fail, fixed must pass with reward 1), ``repeats`` times each,
    on ``workers`` threads; ``sample`` validates a ``stratified_sample`` (seeded). A task the backend
    cannot run (SWE-bench off Docker) raises TaskError before anything starts."""
    if repeats < 1 or workers < 1:
        raise ValueError("repeats and workers must be >= 1")
    todo = list(tasks)
    # refused up front (TaskError), not reported later as infra errors
    require_backend(todo, sandbox_kind if isinstance(sandbox_kind, str) else sandbox_kind.name)
    if sample is not None and sample < len(todo):
        todo = stratified_sample(todo, sample, seed)
    sandbox = make_sandbox(sandbox_kind) if isinstance(sandbox_kind, str) else sandbox_kind
    reports = {t.id: TaskReport(t.id, t.category, t.build_system, t.split) for t in todo}
    jobs = [(t, v) for _ in range(repeats) for t in todo for v in ("broken", "fixed")]
    t0 = time.monotonic()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=len(jobs), desc=f"validating {len(todo)} tasks ({sandbox.name})", unit="run"
        )
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futs = {pool.submit(_one, t, v, sandbox): (t, v) for t, v in jobs}
        for fut in as_completed(futs):
            task, variant = futs[fut]
            rep = reports[task.id]
            try:
                res = fut.result()
            except Exception as e:  # noqa: BLE001 - a crash is a problem to report, not to raise
                rep.problems.append(f"{variant}: {type(e).__name__}: {e}")
                (rep.broken if variant == "broken" else rep.fixed).append(Outcome.INFRA_ERROR)
            else:
                rep.durations_s.append(res.duration_s)
                rep.fingerprint = res.fingerprint
                if variant == "broken":
                    rep.broken.append(res.outcome)
                    if res.outcome != Outcome.FAIL:
                        rep.problems.append(f"broken repo: {res.outcome} (expected fail)")
                else:
                    rep.fixed.append(res.outcome)
                    rep.fixed_guards.append(res.guard)
                    rep.tests_ran = res.tests_ran
                    if res.outcome != Outcome.PASS or res.guard is not None:
                        rep.problems.append(
                            f"reference fix: {res.outcome}, guard={res.guard}: {res.log[-400:]}"
                        )
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    report = CorpusReport(
        sandbox.name, repeats, [reports[t.id] for t in todo], time.monotonic() - t0
    )
    if print_summary:
        print_report(report)
    return report


def print_report(report: CorpusReport) -> None:
    """A rich table: per category and build system, count / ok / flaky / infra / median time."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"corpus validation ({report.sandbox}, {report.repeats} repeats, {report.wall_s:.1f}s)"
    )
    for col in ("category", "build system", "tasks", "ok", "flaky", "infra", "median s"):
        table.add_column(col, justify="left" if col in ("category", "build system") else "right")
    rows = report.summary()
    for r in rows:
        table.add_row(
            r["category"],
            r["build_system"],
            str(r["count"]),
            str(r["ok"]),
            str(r["flaky"]),
            str(r["infra"]),
            f"{r['median_s']:.2f}",
        )
    table.add_row(
        "all",
        "",
        str(sum(r["count"] for r in rows)),
        str(sum(r["ok"] for r in rows)),
        str(sum(r["flaky"] for r in rows)),
        str(sum(r["infra"] for r in rows)),
        "",
        style="bold",
    )
    per_bs = Table(title=f"per build system ({report.sandbox})")
    for col in ("build system", "tasks", "ok", "median s / run", "median s / task"):
        per_bs.add_column(col, justify="left" if col == "build system" else "right")
    for r in report.by_build_system():
        per_bs.add_row(
            r["build_system"],
            str(r["count"]),
            str(r["ok"]),
            f"{r['median_run_s']:.2f}",
            f"{r['median_task_s']:.2f}",
        )
    console = Console()
    console.print(table)
    console.print(per_bs)
    for t in report.failures()[:20]:
        console.print(f"[red]{t.id}[/red]: " + "; ".join(t.problems[:2]))

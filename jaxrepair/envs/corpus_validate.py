"""Corpus validation: every task's broken repo fails its build and the reference fix passes,
each ``repeats`` times, so broken, unfixable and flaky tasks are caught before training.

Why: a reward is only as good as its task; a task is valid when, in the
sandbox, the unfixed repo fails ``build``, the repo with ``fix.patch`` passes, and both
results repeat. ``jaxrepair envs validate`` wires this to the command line.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field

from .protocol import Outcome
from .reward import ValidationResult, validate
from .sandbox import Sandbox, make_sandbox
from .task import Task, require_backend

__all__ = ["CorpusReport", "TaskReport", "print_report", "validate_corpus"]


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

    def failures(self) -> list[TaskReport]:
        return [t for t in self.tasks if not t.ok]

    def to_dict(self) -> dict:
        return {
            "sandbox": self.sandbox,
            "repeats": self.repeats,
            "wall_s": self.wall_s,
            "ok": self.ok,
            "summary": self.summary(),
            "tasks": [t.to_dict() for t in self.tasks],
        }


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
    on ``workers`` threads; ``sample`` validates a seeded random subset. A task the backend
    cannot run (SWE-bench off Docker) raises TaskError before anything starts."""
    if repeats < 1 or workers < 1:
        raise ValueError("repeats and workers must be >= 1")
    todo = list(tasks)
    # refused up front (TaskError), not reported later as infra errors
    require_backend(todo, sandbox_kind if isinstance(sandbox_kind, str) else sandbox_kind.name)
    if sample is not None and sample < len(todo):
        todo = sorted(random.Random(seed).sample(todo, sample), key=lambda t: t.id)
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
    console = Console()
    console.print(table)
    for t in report.failures()[:20]:
        console.print(f"[red]{t.id}[/red]: " + "; ".join(t.problems[:2]))

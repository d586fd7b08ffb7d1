"""`jaxrepair collect`: SFT trajectories from nothing, by the expert or an OpenAI-compatible teacher.

Why: supervised fine-tuning needs demonstrations in exactly the policy's format. The expert
(`jaxrepair.envs.expert`) knows each task's reference fix and plays it through the same
episodes the model uses; a teacher (`jaxrepair.envs.teacher`: OpenAI, vLLM, SGLang, ...)
solves the tasks itself, as in the paper's distillation. Either way every episode is scored
by the environment, and by default only solved episodes are kept (rejection sampling).

The output is the trajectory JSONL that `jaxrepair sft` reads (`data.train_paths`). It is
written to `OUT.partial` while collecting (one line per episode, flushed) and renamed to OUT
when every episode has ended, so a file named OUT is always complete; an existing OUT is
never replaced unless asked. This module never imports JAX.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxrepair.errors import UserError

PIPELINES = ("simplified", "full")
SPLITS = ("train", "test_id", "test", "all")
POLICIES = ("expert", "teacher")
DEFAULT_OUT = "runs/trajectories.jsonl"


def bundled_corpus() -> Path:
    return Path(__file__).resolve().parent / "data" / "tasks" / "corpus"


def spread_over_categories(tasks: Sequence[Any], n: int | None) -> list[Any]:
    """`n` tasks taken round robin over categories (ids sorted), or all when n is None: a
    small `--limit` still covers every kind of failure."""
    if n is None or n >= len(tasks):
        return list(tasks)
    if n < 1:
        raise UserError(f"--limit must be >= 1, got {n}")
    by_cat: dict[str, list[Any]] = collections.defaultdict(list)
    for t in sorted(tasks, key=lambda t: t.id):
        by_cat[t.category].append(t)
    queues = [by_cat[c] for c in sorted(by_cat)]
    out: list[Any] = []
    while len(out) < n:
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def select_tasks(
    tasks_path: str | Path | None = None,
    split: str = "train",
    ids: Sequence[str] = (),
    limit: int | None = None,
) -> list[Any]:
    """Tasks of a corpus (default: the bundled one): the given ids (any split), else the
    split's tasks, `limit` of them spread over categories."""
    from jaxrepair.envs import load_tasks

    if split not in SPLITS:
        raise UserError(f"split {split!r}; choose one of {SPLITS}")
    path = Path(tasks_path) if tasks_path else bundled_corpus()
    if not path.exists():
        raise FileNotFoundError(f"task corpus not found: {path}")
    tasks = load_tasks(path)
    if ids:
        by_id = {t.id: t for t in tasks}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UserError(f"no task {', '.join(missing)} in {path}")
        chosen = [by_id[i] for i in ids]
    else:
        chosen = [t for t in tasks if split == "all" or t.split == split]
        if not chosen:
            raise UserError(f"no {split}-split tasks in {path}")
    return spread_over_categories(chosen, limit)


def _episode_fn(
    policy: str, teacher: Any, sandbox: Any, caps: dict[str, Any]
) -> Callable[[Any, str], dict]:
    from jaxrepair.envs import make_episode
    from jaxrepair.envs.expert import run_expert

    def one(task: Any, pipeline: str) -> dict:
        pcaps = caps if pipeline == "full" else {}
        if policy == "expert":
            ep, _ = run_expert(task, pipeline, sandbox, **pcaps)
            rec = ep.trajectory()
            rec["policy"] = "expert"
            return rec
        return teacher.run_episode(make_episode(task, pipeline, sandbox=sandbox, **pcaps))

    return one


def collect(
    out: str | Path = DEFAULT_OUT,
    tasks: Sequence[Any] | None = None,
    *,
    pipelines: Sequence[str] = ("simplified",),
    policy: str = "expert",
    teacher: Any = None,
    backend: str = "local",
    workers: int = 2,
    max_steps: int = 30,
    keep_failed: bool = False,
    overwrite: bool = False,
    tokenizer: Any = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Play `policy` through every task in each pipeline and write the trajectory JSONL.

    `tasks` defaults to the bundled train split; `teacher` is a `TeacherClient` (policy
    "teacher"); `max_steps` caps full-pipeline episodes; `keep_failed` also keeps unsolved
    episodes; `tokenizer` (a spec) adds token counts to each record. Progress goes to `echo`
    (default: stderr), one line per episode. Returns a summary (counts, per pipeline).
    """
    from jaxrepair.envs import make_sandbox
    from jaxrepair.envs.expert import _json_default

    if policy not in POLICIES:
        raise UserError(f"policy {policy!r}; choose one of {POLICIES}")
    if policy == "teacher" and teacher is None:
        raise UserError("policy teacher needs a teacher endpoint (--teacher-url, --teacher-model)")
    bad = [p for p in pipelines if p not in PIPELINES]
    if bad or not pipelines:
        raise UserError(f"pipeline {', '.join(bad) or '(none)'}; choose from {PIPELINES}")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{out} exists; choose another --out, or pass --overwrite to replace it"
        )
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a directory; give a .jsonl file path")
    chosen = list(tasks) if tasks is not None else select_tasks()
    if echo is None:

        def echo(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

    counter = None
    if tokenizer is not None:
        from jaxrepair.envs.chat import encode_chat
        from jaxrepair.envs.tokenizer import load_tokenizer

        tok = load_tokenizer(tokenizer)

        def counter(rec: dict) -> dict:
            ids, mask = encode_chat(rec["messages"], tok, tools=rec.get("tools"))
            return {"total": len(ids), "assistant": int(sum(mask))}

    sandbox = make_sandbox(backend)
    one = _episode_fn(policy, teacher, sandbox, {"max_steps": max_steps})
    jobs = [(t, p) for p in pipelines for t in chosen]
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    stats: dict[str, dict[str, int]] = {p: {"episodes": 0, "solved": 0} for p in pipelines}
    kept = 0
    t0 = time.perf_counter()
    echo(
        f"collecting {len(jobs)} {policy} episodes ({len(chosen)} tasks x "
        f"{', '.join(pipelines)}) with {workers} workers -> {out}"
    )

    def timed(job: tuple[Any, str]) -> tuple[dict, float]:
        s = time.perf_counter()
        return one(*job), time.perf_counter() - s

    try:
        with (
            open(partial, "w", encoding="utf-8") as fh,
            concurrent.futures.ThreadPoolExecutor(workers) as pool,
        ):
            for i, (rec, dt) in enumerate(pool.map(timed, jobs), 1):
                solved = float(rec.get("reward") or 0.0) > 0
                st = stats[rec["pipeline"]]
                st["episodes"] += 1
                st["solved"] += int(solved)
                if solved or keep_failed:
                    if counter is not None:
                        rec["token_counts"] = counter(rec)
                    fh.write(json.dumps(rec, default=_json_default) + "\n")
                    fh.flush()
                    kept += 1
                echo(
                    f"[{i}/{len(jobs)}] {rec['pipeline']:10s} {rec['task_id']:32s} "
                    f"{rec.get('outcome') or rec.get('end_reason')} reward {rec.get('reward')} "
                    f"({dt:.1f} s){'' if solved or keep_failed else ' (not kept)'}"
                )
    except BaseException:
        if partial.exists():
            echo(f"stopped; the {kept} trajectories written so far are in {partial}")
        raise
    if kept == 0:
        partial.unlink()
        raise UserError(
            f"none of the {len(jobs)} episodes was solved: no trajectory to write to {out} "
            "(--keep-failed writes unsolved ones too)"
        )
    os.replace(partial, out)
    summary = {
        "out": str(out),
        "policy": policy if teacher is None else f"teacher:{teacher.model}",
        "tasks": len(chosen),
        "episodes": len(jobs),
        "kept": kept,
        "per_pipeline": stats,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    dropped = len(jobs) - kept
    echo(
        f"wrote {kept} trajectories to {out} in {summary['wall_s']} s"
        + (f" ({dropped} unsolved episodes left out; --keep-failed keeps them)" if dropped else "")
    )
    return summary


__all__ = ["DEFAULT_OUT", "collect", "select_tasks", "spread_over_categories"]

"""`jaxrepair eval --endpoint URL`: the same evaluation, driving any OpenAI-compatible server.

Why: researchers compare their checkpoints against outside models (a teacher, a hosted API,
our own `jaxrepair serve`). The episodes are the environment's own (`jaxrepair.envs`
pipelines, sandboxes and reward guards, as `jaxrepair collect` plays them); only the policy
is a chat-completions endpoint. The records have the fields of the JAX evaluation's episode
records, so `jaxrepair.train.eval_report` reports both side by side. This module never
imports JAX.
"""

from __future__ import annotations

import concurrent.futures
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from jaxrepair.envs.protocol import Outcome
from jaxrepair.envs.task import Task
from jaxrepair.envs.teacher import TeacherClient, TeacherError
from jaxrepair.train.analysis import tool_sequence

__all__ = ["endpoint_record", "evaluate_endpoint"]

CAPPED = ("max_steps", "max_context_tokens", "context", "steps")  # end reasons of a cap


def endpoint_record(rec: dict[str, Any], task: Task, sample: int) -> dict[str, Any]:
    """An environment trajectory as an evaluation episode record (`eval_report`'s fields)."""
    outcome = rec.get("outcome") or Outcome.INFRA_ERROR
    end = str(rec.get("end_reason") or "")
    return {
        **rec,
        "sample": sample,
        "outcome": str(outcome),
        "valid": outcome != Outcome.INFRA_ERROR,
        "reward": float(rec.get("reward") or 0.0),
        "tampered": rec.get("guard") is not None,
        "truncated": any(c in end for c in CAPPED),
        "tool_calls": len(tool_sequence(rec.get("messages", []))),
        "category": task.category,
        "build_system": task.build_system,
        "split": task.split,
    }


def evaluate_endpoint(
    client: TeacherClient,
    tasks: Sequence[Task],
    pipelines: Sequence[str] = ("simplified", "full"),
    *,
    samples: int = 1,
    sandbox: str = "local",
    workers: int = 4,
    max_steps: int = 30,
    echo: Callable[[str], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """`samples` episodes of every task in each pipeline, played by `client`; returns
    {pipeline: records}. An endpoint that fails (after the client's retries) ends its
    episode as infra_error, recorded and excluded from success, never scored 0."""
    from jaxrepair.envs import make_episode, make_sandbox

    if samples < 1 or workers < 1:
        raise ValueError(f"samples and workers must be >= 1 (got {samples}, {workers})")
    if samples > 1 and client.temperature == 0:
        raise ValueError("samples > 1 at temperature 0 repeats one answer; set a temperature")
    box = make_sandbox(sandbox)
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    jobs = [(p, t, s) for p in pipelines for t in tasks for s in range(samples)]

    def one(job: tuple[str, Task, int]) -> dict[str, Any]:
        pipeline, task, sample = job
        caps = {"max_steps": max_steps} if pipeline == "full" else {}
        episode = make_episode(task, pipeline, sandbox=box, **caps)
        try:
            rec = client.run_episode(episode)
        except TeacherError as e:
            rec = {
                "task_id": task.id,
                "pipeline": pipeline,
                "messages": [],
                "outcome": Outcome.INFRA_ERROR,
                "end_reason": f"endpoint: {e}",
            }
        finally:
            episode.close()  # its workspace, whatever happened
        return endpoint_record(rec, task, sample)

    out: dict[str, list[dict[str, Any]]] = {p: [] for p in pipelines}
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for i, rec in enumerate(pool.map(one, jobs), 1):
            out[rec["pipeline"]].append(rec)
            say(
                f"[{i}/{len(jobs)}] {rec['pipeline']:10s} {rec['task_id']:32s} "
                f"{rec['outcome']} reward {rec['reward']:.0f} ({time.perf_counter() - t0:.0f} s)"
            )
    return out

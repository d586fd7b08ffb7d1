"""Evaluate a policy on held-out tasks in the full and simplified pipelines.

The paper's central finding is that policies do not transfer across environments, so results
are always reported per pipeline (and per category), with the environment fingerprint of the
builds, never pooled.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh

from jaxrepair import multihost
from jaxrepair.config import RunConfig
from jaxrepair.engine.api import RolloutEngine
from jaxrepair.envs.task import Task
from jaxrepair.envs.tokenizer import Tokenizer
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.qwen3 import Params
from jaxrepair.train.collector import collect
from jaxrepair.train.rollout import Rollout, SamplingSettings

PIPELINES = ("simplified", "full")


def summarize(rollouts: Sequence[Rollout]) -> dict[str, Any]:
    """Success rate overall and per category, mean tool calls, tamper rate, infra errors.

    Infra errors are excluded from the denominators (they say nothing about the policy) and
    reported separately.
    """
    scored = [r for r in rollouts if r.valid]
    by_cat: dict[str, list[Rollout]] = collections.defaultdict(list)
    by_task: dict[str, list[Rollout]] = collections.defaultdict(list)
    for r in scored:
        by_cat[r.info.get("category") or "?"].append(r)
        by_task[r.task_id].append(r)
    n = max(1, len(scored))
    return {
        "episodes": len(rollouts),
        "scored": len(scored),
        "tasks": len(by_task),
        "infra_errors": len(rollouts) - len(scored),
        # with several samples per task: the mean over samples (avg@k) ...
        "success_rate": sum(r.reward > 0 for r in scored) / n,
        # ... and the share of tasks solved by at least one sample (pass@k)
        "tasks_solved_rate": sum(any(r.reward > 0 for r in rs) for rs in by_task.values())
        / max(1, len(by_task)),
        "per_category": {
            c: {"n": len(rs), "success_rate": sum(r.reward > 0 for r in rs) / len(rs)}
            for c, rs in sorted(by_cat.items())
        },
        "per_task": {
            t: sum(r.reward > 0 for r in rs) / len(rs) for t, rs in sorted(by_task.items())
        },
        "mean_tool_calls": sum(r.tool_calls for r in scored) / n,
        "tamper_rate": sum(r.tampered for r in scored) / n,
        "truncated": sum(r.truncated for r in scored),
    }


def evaluate(
    params: Params,
    cfg: Qwen3Config,
    tokenizer: Tokenizer,
    tasks: Sequence[Task],
    farm: Any,
    *,
    pipelines: Sequence[str] = PIPELINES,
    sampling: SamplingSettings | None = None,
    max_seq_len: int = 4096,
    seed: int = 0,
    label: str = "eval",
    mesh: Mesh | None = None,
    full_tasks: Sequence[Task] | None = None,
    samples: int = 1,
    generate_fn: Any = None,
    engine: RolloutEngine | None = None,
    policy_version: int = 0,
    farm_drivers: int | None = None,
) -> dict[str, Any]:
    """`samples` episodes per task and pipeline (default one, greedy); returns
    {pipeline: summary}. success_rate is the mean over all samples (avg@k): with a sampling
    temperature it measures the policy GRPO optimises, at a finer grain than one greedy answer
    per task.

    `full_tasks` optionally restricts the (slower, multi-turn) full pipeline to a subset;
    `generate_fn` or `engine` replace the static sampler (see `collector.collect`); an
    engine is given `params` as `policy_version` unless it holds that version already. With
    several JAX processes every process calls this with the same arguments (processes
    0..`farm_drivers`-1 with their farm, the others an `IdleFarm`) and gets the same result.
    """
    sampling = sampling or SamplingSettings(max_new_tokens=256, temperature=0.0)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if samples > 1 and sampling.temperature == 0:
        raise ValueError("samples > 1 with temperature 0 repeats one greedy answer; sample")
    out: dict[str, Any] = {}
    for pipeline in pipelines:
        if pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {pipeline!r}; expected one of {PIPELINES}")
        chosen = list(full_tasks if (pipeline == "full" and full_tasks is not None) else tasks)
        rollouts, stats = collect(
            params,
            cfg,
            chosen,
            samples,
            farm,
            tokenizer,
            sampling,
            jax.random.key(seed),
            pipeline,
            max_seq_len,
            mesh=mesh,
            episode_prefix=f"{label}-{pipeline}",
            # an evaluation scores every answer, finished or cut at max_new_tokens
            truncate_unfinished=False,
            generate_fn=generate_fn,
            engine=engine,
            policy_version=policy_version,
            farm_drivers=farm_drivers,
        )
        cats = {t.id: t.category for t in chosen}
        for r in rollouts:
            r.info.setdefault("category", cats.get(r.task_id))
        summary = summarize(rollouts)
        summary["accounting_complete"] = stats.complete
        summary["samples_per_task"] = samples
        summary["temperature"] = sampling.temperature
        summary["fingerprints"] = sorted(
            {
                json.dumps(r.info.get("fingerprint"), sort_keys=True)
                for r in rollouts
                if r.info.get("fingerprint")
            }
        )
        out[pipeline] = summary
    return out


RANDOM_INIT_WARNING = (
    "evaluated randomly initialised weights: neither train.init_from nor model.hf_dir is set, "
    "so these results describe no trained model"
)


def run_eval(
    config: RunConfig, *, limit: int | None = None, pipelines: Sequence[str] = PIPELINES
) -> dict[str, Any]:
    """`jaxrepair eval CONFIG.toml`: evaluate `train.init_from` (orbax run or HF dir) on the
    test split of `envs.corpus` (`limit` tasks spread over categories, default all) in
    `pipelines`; returns the eval record.

    The record says what was evaluated (kind orbax/hf/random, source, checkpoint step, the
    config, the task ids) next to the results; it is written to train.out_dir/eval.json (the
    latest) and appended to train.out_dir/evals.jsonl (every evaluation, never overwritten).
    Random weights (no init_from, no hf_dir) are evaluated with a loud warning, in the log
    and in the record. Weights are evaluated in `model.dtype`, the dtype training computes in.
    """
    import contextlib
    import logging
    import sys
    import time

    import jax.numpy as jnp

    from jaxrepair.collect import spread_over_categories
    from jaxrepair.engine.jax_engine import engine_from_config
    from jaxrepair.envs.tokenizer import load_tokenizer
    from jaxrepair.train.run_setup import (
        corpus_path,
        corpus_tasks,
        farm_drivers,
        make_farm,
        resolve_model,
        run_mesh,
        tokenizer_spec,
    )
    from jaxrepair.train.rundir import append_jsonl
    from jaxrepair.train.storage import run_path, write_text_once

    log = logging.getLogger(__name__)
    for pipeline in pipelines:
        if pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {pipeline!r}; expected one of {PIPELINES}")
    src = config.train.init_from or config.model.hf_dir
    spec = tokenizer_spec(config)
    tasks = spread_over_categories(corpus_tasks(config.envs, "test"), limit)
    tok = load_tokenizer(spec)
    source = resolve_model(config, tok.vocab_size)
    cfg, mesh = source.cfg, run_mesh(config)
    if source.kind == "random":
        log.warning(
            "%s (preset %r, seed %d)", RANDOM_INIT_WARNING, config.model.preset, config.train.seed
        )
    params, step = source.load(mesh, jnp.dtype(config.model.dtype), config.train.seed)
    sampling = SamplingSettings(max_new_tokens=config.grpo.max_new_tokens, temperature=0.0)
    engine = engine_from_config(
        config.engine, params, cfg, config.data.seq_len + sampling.max_new_tokens
    )
    out = run_path(config.train.out_dir)  # every process holds the same results; one writes
    with contextlib.closing(make_farm(config.envs, out).start()) as farm:
        results = evaluate(
            params,
            cfg,
            tok,
            tasks,
            farm,
            pipelines=pipelines,
            sampling=sampling,
            max_seq_len=config.data.seq_len,
            mesh=mesh,
            engine=engine,
            farm_drivers=farm_drivers(config.envs),
        )
    record: dict[str, Any] = {
        "evaluated": {
            "kind": source.kind,
            "source": source.path,
            "step": step,
            "init_from": src,
            "params": cfg.num_params(),
            "tokenizer": spec,
        },
        "random_init": source.kind == "random",
        **({"warning": RANDOM_INIT_WARNING} if source.kind == "random" else {}),
        "tasks": {
            "corpus": corpus_path(config.envs),
            "split": "test",
            "limit": limit,
            "ids": [t.id for t in tasks],
        },
        "sampling": {"max_new_tokens": sampling.max_new_tokens, "temperature": 0.0},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": sys.argv,
        "config": config.to_dict(),
        "results": results,
    }
    if multihost.is_primary():
        out.mkdir(parents=True, exist_ok=True)
        latest, history = out / "eval.json", out / "evals.jsonl"
        if latest.is_file() and not history.is_file():  # from before evals.jsonl: keep it
            append_jsonl(history, {"previous": json.loads(latest.read_text())})
    write_text_once(out / "eval.json", json.dumps(record, indent=2, default=str))
    append_jsonl(out / "evals.jsonl", record)
    return record

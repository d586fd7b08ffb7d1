"""Evaluate a policy on held-out tasks in the full and simplified pipelines.

The paper's central finding is that policies do not transfer across environments, so results
are always reported per pipeline (and per category), with the environment fingerprint of the
builds, never pooled.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
from jax.sharding import Mesh

from jaxrepair import multihost
from jaxrepair.config import RunConfig
from jaxrepair.engine.api import RolloutEngine
from jaxrepair.envs.task import SPLITS, Task
from jaxrepair.envs.teacher import TeacherClient
from jaxrepair.envs.tokenizer import Tokenizer
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.qwen3 import Params
from jaxrepair.train.collector import collect
from jaxrepair.train.eval_report import episode_record, report_ks, summarize_records
from jaxrepair.train.rollout import SamplingSettings

PIPELINES = ("simplified", "full")


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
    episodes: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """`samples` episodes per task and pipeline (default one, greedy); returns
    {pipeline: summary} (`eval_report.summarize_records`: success with its interval, avg@k and
    pass@k, by category / build system / split, turns, tool calls, tokens and the truncation,
    infra-error and tamper rates). success_rate is the mean over all samples (avg@k): with a
    sampling temperature it measures the policy GRPO optimises, at a finer grain than one
    greedy answer per task. `episodes`, when given, receives each pipeline's episode records
    (for `eval_report.write_report`).

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
    ks = report_ks(samples)
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
        by_id = {t.id: t for t in chosen}
        recs = [episode_record(r, by_id[r.task_id], pipeline) for r in rollouts]
        summary = summarize_records(recs, ks)
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
        if episodes is not None:
            episodes[pipeline] = recs
        out[pipeline] = summary
    return out


RANDOM_INIT_WARNING = (
    "evaluated randomly initialised weights: neither train.init_from nor model.hf_dir is set, "
    "so these results describe no trained model"
)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """What `jaxrepair eval` evaluates beyond the config: `limit` tasks of the corpus `split`
    ("test": held-out projects; "test_id": held out in distribution; "train") spread over
    categories (None: all) in `pipelines`; `samples` per task (1: one greedy answer; more:
    sampled at grpo.temperature, for avg@k and pass@k); Qwen3's `thinking` switch ("on",
    "off" or "both", each a model of its own in the report); `compare`: (label, checkpoint)
    pairs evaluated beside the config's model with the same settings (the mismatch matrix);
    `endpoint`: an OpenAI-compatible server evaluated through the same episodes."""

    limit: int | None = None
    split: str = "test"
    pipelines: tuple[str, ...] = PIPELINES
    samples: int = 1
    thinking: str = "on"
    compare: tuple[tuple[str, str], ...] = ()
    endpoint: TeacherClient | None = None

    def __post_init__(self) -> None:
        bad = [p for p in self.pipelines if p not in PIPELINES]
        if bad or not self.pipelines:
            raise ValueError(f"unknown pipeline {bad or '(none)'}; expected one of {PIPELINES}")
        if self.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {self.samples}")
        if self.split not in SPLITS:
            raise ValueError(f"--split {self.split!r}; choose one of {SPLITS}")
        if self.thinking not in THINKING:
            raise ValueError(f"--thinking {self.thinking!r}; choose one of {THINKING}")
        labels = [label for label, _ in self.compare]
        if len(set(labels)) != len(labels):
            raise ValueError(f"--compare labels must be distinct, got {labels}")


THINKING = ("on", "off", "both")


def run_eval(config: RunConfig, options: EvalOptions | None = None) -> dict[str, Any]:
    """`jaxrepair eval CONFIG.toml`: evaluate `train.init_from` (orbax run or HF dir), the
    `--compare` checkpoints and an `--endpoint` on the test split of `envs.corpus` as
    `options` says; returns the eval record.

    The record says what was evaluated (kind orbax/hf/random, source, checkpoint step, the
    config, the task ids) next to the results (`results`: the config's model; `models`: every
    evaluated model); it is written to train.out_dir/eval.json (the latest) and appended to
    train.out_dir/evals.jsonl (every evaluation, never overwritten); the episodes go to
    train.out_dir/eval/episodes.jsonl and the report with its plots to eval/report.md.
    Random weights (no init_from, no hf_dir) are evaluated with a loud warning, in the log and
    in the record, unless an endpoint is what is evaluated. Weights are evaluated in
    `model.dtype`, the dtype training computes in.
    """
    import contextlib
    import logging
    import sys
    import time

    import jax.numpy as jnp

    from jaxrepair.collect import spread_over_categories
    from jaxrepair.endpoint_eval import evaluate_endpoint
    from jaxrepair.engine.jax_engine import engine_from_config
    from jaxrepair.envs.tokenizer import load_tokenizer
    from jaxrepair.train.eval_report import write_report
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

    opts = options or EvalOptions()
    log = logging.getLogger(__name__)
    src = config.train.init_from or config.model.hf_dir
    spec = tokenizer_spec(config)
    tasks = spread_over_categories(corpus_tasks(config.envs, opts.split), opts.limit)
    tok = load_tokenizer(spec)
    mesh = run_mesh(config)
    temperature = 0.0 if opts.samples == 1 else config.grpo.temperature
    if opts.samples > 1 and temperature == 0:
        raise ValueError("--samples > 1 samples at grpo.temperature, which is 0: set it above 0")
    modes = {"on": (True,), "off": (False,), "both": (True, False)}[opts.thinking]
    sources = []  # (label, model source)
    if src is not None or opts.endpoint is None:
        sources.append(
            (Path(src).name if src else "random-init", resolve_model(config, tok.vocab_size))
        )
    for label, path in opts.compare:
        other = dataclasses.replace(config, train=dataclasses.replace(config.train, init_from=path))
        sources.append((label, resolve_model(other, tok.vocab_size)))
    if sources and sources[0][1].kind == "random":
        log.warning(
            "%s (preset %r, seed %d)", RANDOM_INIT_WARNING, config.model.preset, config.train.seed
        )
    out = run_path(config.train.out_dir)  # every process holds the same results; one writes
    models: dict[str, dict[str, Any]] = {}
    episodes: dict[str, dict[str, list[dict[str, Any]]]] = {}
    engines: dict[Qwen3Config, RolloutEngine | None] = {}  # one per architecture evaluated
    with contextlib.closing(make_farm(config.envs, out).start()) as farm:
        # a model's weights are the engine's version `version` (both thinking modes reuse them)
        for version, (label, source) in enumerate(sources):
            params, step = source.load(mesh, jnp.dtype(config.model.dtype), config.train.seed)
            for thinking in modes:
                name = (
                    label if len(modes) == 1 else f"{label} ({'' if thinking else 'no '}thinking)"
                )
                sampling = SamplingSettings(
                    max_new_tokens=config.grpo.max_new_tokens,
                    temperature=temperature,
                    top_p=config.grpo.top_p if temperature > 0 else 1.0,
                    top_k=config.grpo.top_k if temperature > 0 else 0,
                    thinking=thinking,
                )
                if source.cfg not in engines:
                    engines[source.cfg] = engine_from_config(
                        config.engine,
                        params,
                        source.cfg,
                        config.data.seq_len + sampling.max_new_tokens,
                        version=version,
                    )
                episodes[name] = {}
                results = evaluate(
                    params,
                    source.cfg,
                    tok,
                    tasks,
                    farm,
                    pipelines=opts.pipelines,
                    sampling=sampling,
                    max_seq_len=config.data.seq_len,
                    seed=config.train.seed,
                    label=f"eval{len(models)}",
                    mesh=mesh,
                    samples=opts.samples,
                    engine=engines[source.cfg],
                    policy_version=version,
                    farm_drivers=farm_drivers(config.envs),
                    episodes=episodes[name],
                )
                models[name] = {
                    "evaluated": {
                        "kind": source.kind,
                        "source": source.path,
                        "step": step,
                        "params": source.cfg.num_params(),
                        "thinking": thinking,
                    },
                    "results": results,
                }
            del params
    if opts.endpoint is not None:  # host-side episodes: process 0 plays them, all get them
        client = opts.endpoint
        got = None
        if multihost.is_primary():
            got = evaluate_endpoint(
                client,
                tasks,
                opts.pipelines,
                samples=opts.samples,
                sandbox=config.envs.sandbox,
                workers=config.envs.workers,
                max_steps=config.envs.max_steps,
            )
        got = multihost.broadcast_object(got)
        name = f"endpoint:{client.model}"
        episodes[name] = got
        models[name] = {
            "evaluated": {"kind": "endpoint", "source": client.base_url, "model": client.model},
            "results": {
                p: summarize_records(recs, report_ks(opts.samples)) for p, recs in got.items()
            },
        }
    first = next(iter(models.values()))
    record: dict[str, Any] = {
        "evaluated": {
            **first["evaluated"],
            "init_from": src,
            "tokenizer": spec,
        },
        "random_init": first["evaluated"]["kind"] == "random",
        **({"warning": RANDOM_INIT_WARNING} if first["evaluated"]["kind"] == "random" else {}),
        "tasks": {
            "corpus": corpus_path(config.envs),
            "split": "test",
            "limit": opts.limit,
            "ids": [t.id for t in tasks],
        },
        "sampling": {
            "max_new_tokens": config.grpo.max_new_tokens,
            "temperature": temperature,
            "samples": opts.samples,
            "thinking": opts.thinking,
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": sys.argv,
        "config": config.to_dict(),
        "results": first["results"],
        "models": models,
    }
    if multihost.is_primary():
        out.mkdir(parents=True, exist_ok=True)
        latest, history = out / "eval.json", out / "evals.jsonl"
        if latest.is_file() and not history.is_file():  # from before evals.jsonl: keep it
            append_jsonl(history, {"previous": json.loads(latest.read_text())})
        if "://" not in str(out):  # the report and its plots: a local run directory
            report = write_report(
                Path(str(out)) / "eval", episodes, report_ks(opts.samples), title="Evaluation"
            )
            record["report"] = str(report)
            with open(report.parent / "episodes.jsonl", "w", encoding="utf-8") as fh:
                for name, per in episodes.items():
                    for recs in per.values():
                        for r in recs:
                            fh.write(json.dumps({"model": name, **r}, default=str) + "\n")
    write_text_once(out / "eval.json", json.dumps(record, indent=2, default=str))
    append_jsonl(out / "evals.jsonl", record)
    return record

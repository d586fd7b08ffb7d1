"""`jaxrepair demo`: the paper's whole method at toy scale on this machine.

1. validate a sample of the bundled task corpus (broken fails, fixed passes) in the sandbox;
2. collect expert trajectories (simplified and full pipeline) on the train split;
3. SFT a toy Qwen3 (tiny BPE tokenizer) on them;
4. evaluate the base and SFT models on held-out tasks in both pipelines, and the SFT model on
   the train tasks in the simplified pipeline (the paper's "matched train-test conditions");
5. GRPO from the SFT model in the simplified pipeline (the paper's RL setting) on the train
   tasks the SFT model solves sometimes but not always (a pass-rate curriculum: a task it
   never or always solves gives GRPO no signal), with DAPO dynamic sampling;
6. evaluate the RL model the same way; print the table, write a PNG and a JSON summary.

The simplified pipeline is scored two ways: one greedy answer per task, and the mean success
over `eval_samples` answers sampled at the GRPO temperature (avg@k: the quantity GRPO
optimises, and a finer measure than one answer on a few dozen tasks).

Everything is measured, nothing is asserted: if the toy model does not learn something, the
table says so.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxrepair.config import RunConfig, load_config

MARKER = "demo_summary.json"
SEEDS_MARKER = "seeds_summary.json"  # what `--seeds N` writes beside its seed-I runs
TRAJ_SIMPLE, TRAJ_FULL = "trajectories_simplified.jsonl", "trajectories_full.jsonl"


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    train_tasks: int | None  # None = every train-split task
    test_tasks: int | None
    full_eval_tasks: int  # held-out tasks also run in the (slow, multi-turn) full pipeline
    full_sft_tasks: int  # train tasks whose full-pipeline expert trajectories join SFT
    validate_sample: int
    sft_steps: int
    sft_batch: int
    grpo_steps: int
    tasks_per_step: int
    group_size: int
    max_new_tokens: int
    seq_len: int = 2048  # tasks whose simplified episode does not fit are left out
    # GRPO sampling temperature: at 1.0 the toy SFT model never reproduced an exact edit (every
    # group all-zero, no GRPO signal); at 0.5 some rollouts of a group succeed.
    temperature: float = 0.5
    grpo_lr: float = 1e-4
    grpo_minibatch: int | None = None  # rollouts per optimizer update (None = whole batch)
    sampling_rounds: int = 2  # DAPO refill rounds per GRPO step
    eval_samples: int = 4  # sampled answers per task for the avg@k columns
    workers: int = 2
    full_max_steps: int = 4
    # held-out in distribution: unseen breakages of the train projects, kept out of SFT and GRPO
    id_test_tasks: int = 8
    seed: int = 0  # training seed (SFT and GRPO); the task splits do not depend on it


FULL = DemoSettings(
    train_tasks=None,
    test_tasks=None,
    full_eval_tasks=6,
    full_sft_tasks=8,
    validate_sample=24,
    sft_steps=160,
    sft_batch=4,
    grpo_steps=10,
    tasks_per_step=4,
    group_size=8,
    max_new_tokens=128,
    grpo_minibatch=16,
)
QUICK = DemoSettings(
    train_tasks=4,
    test_tasks=2,
    full_eval_tasks=1,
    full_sft_tasks=1,
    validate_sample=2,
    sft_steps=4,
    sft_batch=2,
    grpo_steps=1,
    tasks_per_step=2,
    group_size=2,
    max_new_tokens=24,
    seq_len=1536,
    full_max_steps=2,
    sampling_rounds=1,
    eval_samples=2,
    id_test_tasks=1,
)


def _stratified(tasks: Sequence[Any], n: int | None, seed: int) -> list[Any]:
    """n tasks spread over categories (round robin), deterministic."""
    if n is None or n >= len(tasks):
        return list(tasks)
    by_cat: dict[str, list[Any]] = {}
    for t in sorted(tasks, key=lambda t: t.id):
        by_cat.setdefault(t.category, []).append(t)
    rng = random.Random(seed)
    for v in by_cat.values():
        rng.shuffle(v)
    out: list[Any] = []
    while len(out) < n:
        for cat in sorted(by_cat):
            if by_cat[cat] and len(out) < n:
                out.append(by_cat[cat].pop())
    return out


def _fitting(tasks: Sequence[Any], tok: Any, budget: int) -> list[Any]:
    """Tasks whose simplified-pipeline prompt fits `budget` tokens (toy context length)."""
    from jaxrepair.envs import make_episode
    from jaxrepair.envs.chat import encode_prompt

    out = []
    for t in tasks:
        ep = make_episode(t, "simplified")
        ep.reset()
        if len(encode_prompt(ep.messages, tok)) <= budget:
            out.append(t)
    return out


def _prepare_out(out: Path) -> Path:
    """The directory this demo writes: `out`, or when `out` holds a previous demo (finished
    or interrupted) the next free `out-1`, `out-2`, ...: a previous run is never deleted."""
    if out.exists() and any(out.iterdir()):
        finished = (out / MARKER).is_file() or (out / SEEDS_MARKER).is_file()
        if not finished and not (out / "demo_running").is_file():
            raise FileExistsError(
                f"{out} exists and is not a jaxrepair demo directory; choose --out"
            )
        k = 1
        while (out.parent / f"{out.name}-{k}").exists():
            k += 1
        new = out.parent / f"{out.name}-{k}"
        print(f"{out} holds a previous demo (kept); writing {new}", flush=True)
        out = new
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_running").write_text("")
    return out


def _plot(out: Path, grpo_metrics: Path, table: dict[str, Any], k: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (
        [json.loads(x) for x in grpo_metrics.read_text().splitlines() if x.strip()]
        if grpo_metrics.is_file()
        else []
    )
    rows = [r for r in rows if "reward_mean" in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if rows:
        steps = [r["step"] for r in rows]
        rewards = [r["reward_mean"] for r in rows]
        ax1.plot(steps, rewards, marker="o", label="mean reward, all sampled rollouts")
        w = min(3, len(rewards))
        smooth = [sum(rewards[max(0, i - w + 1) : i + 1]) / len(rewards[max(0, i - w + 1) : i + 1])
                  for i in range(len(rewards))]  # fmt: skip
        ax1.plot(steps, smooth, ls="--", label=f"running mean ({w} steps)")
        ax1.set_ylim(-0.05, 1.05)
    ax1.set_xlabel("GRPO step")
    ax1.set_ylabel("mean reward")
    ax1.set_title("GRPO, simplified pipeline (curriculum tasks)")
    ax1.legend(loc="lower right", fontsize=8)
    models = list(table)
    cols = [
        ("held-out simplified, greedy", "test", "simplified"),
        (f"held-out simplified, avg@{k}", "test", f"simplified avg@{k}"),
        (f"held-out (train projects) simplified, avg@{k}", "test_id", f"simplified avg@{k}"),
        ("held-out full, greedy", "test", "full"),
        (f"train simplified, avg@{k}", "train", f"simplified avg@{k}"),
    ]
    width = 0.8 / len(cols)
    for i, (label, split, pipe) in enumerate(cols):
        vals = [
            (table[m].get(split, {}).get(pipe) or {}).get("success_rate", float("nan"))
            for m in models
        ]
        ax2.bar([j + i * width for j in range(len(models))], vals, width, label=label)
    ax2.set_xticks([j + 0.4 - width / 2 for j in range(len(models))])
    ax2.set_xticklabels(models)
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("success rate")
    ax2.set_title("evaluation")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = out / "reward_curve.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _print_table(console, table: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title="jaxrepair demo: success rate (scored episodes; infra errors excluded)")
    for col in (
        "model",
        "split",
        "pipeline",
        "n",
        "success",
        "tasks solved",
        "per category",
        "tool calls",
        "tampered",
        "infra",
    ):
        t.add_column(col)
    for model, splits in table.items():
        for split, pipes in splits.items():
            for pipe, s in pipes.items():
                cats = " ".join(f"{c}:{v['success_rate']:.0%}" for c, v in s["by_category"].items())
                t.add_row(
                    model,
                    split,
                    pipe,
                    str(s["scored"]),
                    f"{s['success_rate']:.1%}",
                    f"{s['tasks_solved_rate']:.1%}",
                    cats,
                    f"{s['mean_tool_calls']:.1f}",
                    f"{s['tamper_rate']:.0%}",
                    str(s["infra_errors"]),
                )
    console.print(t)


def curriculum(
    tasks: Sequence[Any], pass_rates: dict[str, float], minimum: int
) -> tuple[list[Any], str]:
    """GRPO tasks: those solved sometimes but not always (0 < pass rate < 1); a group of
    rollouts on any other task has equal rewards, hence no GRPO signal. Falls back to tasks
    solved at least once, then to every task, when fewer than `minimum` qualify."""
    mixed = [t for t in tasks if 0 < pass_rates.get(t.id, 0.0) < 1]
    if len(mixed) >= minimum:
        return mixed, "0 < pass rate < 1"
    some = [t for t in tasks if pass_rates.get(t.id, 0.0) > 0]
    if len(some) >= minimum:
        return some, "pass rate > 0 (too few with 0 < pass rate < 1)"
    return list(tasks), "every train task (too few solved at all)"


def demo_configs(
    s: DemoSettings, out: Path, config_path: str | None, overrides: Sequence[str]
) -> tuple[RunConfig, RunConfig]:
    """The SFT and GRPO run configs of the demo (`overrides` last, so they win); their
    `[envs]` section also sizes the evaluation farm."""
    base = [
        "model.preset=toy",
        "model.attention_impl=auto",  # "blocked" on CPU: causal blocks, its own backward
        "model.remat=save_dots",  # 15% faster than none on XLA:CPU at 2k tokens (measured)
        f"data.train_paths={out / TRAJ_SIMPLE},{out / TRAJ_FULL}",
        f"data.seq_len={s.seq_len}",
        f"data.batch_size={s.sft_batch}",
        "optim.lr=3e-3",
        "optim.warmup_steps=10",
        "optim.weight_decay=0.0",
        f"envs.workers={s.workers}",
        f"envs.max_steps={s.full_max_steps}",
        "tokenizer.spec=tiny",
        f"train.seed={s.seed}",
    ]
    sft = [
        f"train.steps={s.sft_steps}",
        f"train.out_dir={out / 'sft'}",
        f"train.checkpoint_every={s.sft_steps}",
        "train.log_every=10",
    ]
    grpo = [
        f"train.steps={s.grpo_steps}",
        f"train.out_dir={out / 'grpo'}",
        f"train.init_from={out / 'sft'}",
        f"train.checkpoint_every={s.grpo_steps}",
        f"optim.lr={s.grpo_lr}",
        "optim.warmup_steps=0",
        "optim.schedule=constant",
        f"grpo.tasks_per_step={s.tasks_per_step}",
        f"grpo.group_size={s.group_size}",
        f"grpo.minibatch_size={s.grpo_minibatch or 'none'}",
        f"grpo.max_new_tokens={s.max_new_tokens}",
        f"grpo.temperature={s.temperature}",
        "grpo.pipeline=simplified",
        "grpo.kl_beta=0.0",
        "grpo.submit_unfinished=true",
        "grpo.dynamic_sampling=true",
        f"grpo.sampling_rounds={s.sampling_rounds}",
    ]
    return (
        load_config(config_path, [*base, *sft, *overrides]),
        load_config(config_path, [*base, *grpo, *overrides]),
    )


def run_demo(
    out_dir: str | Path = "runs/demo",
    quick: bool = False,
    config_path: str | None = None,
    overrides: Sequence[str] = (),
    settings: DemoSettings | None = None,
) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    from rich.console import Console

    from jaxrepair import multihost
    from jaxrepair.engine.api import RolloutEngine
    from jaxrepair.engine.jax_engine import engine_from_config
    from jaxrepair.envs import make_sandbox
    from jaxrepair.envs.corpus_validate import validate_corpus
    from jaxrepair.envs.expert import collect_trajectories
    from jaxrepair.model import Qwen3Config, init_params
    from jaxrepair.train.evaluate import evaluate
    from jaxrepair.train.grpo_trainer import run_grpo
    from jaxrepair.train.rollout import SamplingSettings
    from jaxrepair.train.run_setup import (
        corpus_tasks,
        farm_drivers,
        make_farm,
        resolve_model,
        resolve_tokenizer,
        run_mesh,
    )
    from jaxrepair.train.sft import run_sft

    console = Console(width=None if Console().is_terminal else 150)
    s = settings or (QUICK if quick else FULL)
    out = Path(out_dir)
    # several processes (one per host) share out_dir: process 0 prepares it and writes the
    # host-side artefacts (validation, expert trajectories, the summary); all train and evaluate
    primary = multihost.is_primary()
    if primary:
        out = _prepare_out(out)
    out = Path(multihost.broadcast_object(str(out)))  # process 0's choice, on every process
    multihost.sync("demo out_dir ready")
    sft_cfg, grpo_cfg = demo_configs(s, out, config_path, overrides)
    mesh = run_mesh(sft_cfg)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str):
        console.rule(f"[bold]{name}")
        return time.perf_counter()

    # 1. corpus ------------------------------------------------------------------------
    t0 = stage("1/6 task corpus: validate a sample in the sandbox")
    tasks = corpus_tasks(sft_cfg.envs)
    tok = resolve_tokenizer(sft_cfg)
    fitting = _fitting(tasks, tok, s.seq_len - s.max_new_tokens)
    pool = [t for t in fitting if t.split == "train"]
    test_id = _stratified(pool, s.id_test_tasks, 4)  # unseen breakages of the train projects
    kept_out = {t.id for t in test_id}
    train = _stratified([t for t in pool if t.id not in kept_out], s.train_tasks, 0)
    test = _stratified([t for t in fitting if t.split == "test"], s.test_tasks, 1)
    sandbox = make_sandbox(sft_cfg.envs.sandbox)
    valid_ok = None
    if primary:
        report = validate_corpus(
            train + test_id + test, sandbox, repeats=1, workers=s.workers, sample=s.validate_sample
        )
        valid_ok = report.ok
    valid_ok = multihost.broadcast_object(valid_ok)
    timings["validate"] = time.perf_counter() - t0
    console.print(
        f"{len(tasks)} tasks, {len(fitting)} fit {s.seq_len} tokens; using {len(train)} train / "
        f"{len(test_id)} held-out of the train projects / {len(test)} held-out of other "
        f"projects; validated sample ok: {valid_ok}"
    )

    # 2. expert trajectories -------------------------------------------------------------
    t0 = stage("2/6 expert trajectories (the teacher knows the reference fix)")
    traj_simple, traj_full = out / TRAJ_SIMPLE, out / TRAJ_FULL
    counts = None
    if primary:
        recs = collect_trajectories(train, "simplified", sandbox, traj_simple, workers=s.workers)
        recs += collect_trajectories(
            _stratified(train, s.full_sft_tasks, 2),
            "full",
            sandbox,
            traj_full,
            workers=s.workers,
            max_steps=12,
        )
        counts = (len(recs), sum(r["reward"] > 0 for r in recs))
    n_recs, solved = multihost.broadcast_object(counts)  # the files are written: go on
    timings["expert"] = time.perf_counter() - t0
    console.print(f"{n_recs} expert trajectories, {solved} solved -> {traj_simple}, {traj_full}")

    # 3. SFT -----------------------------------------------------------------------------
    t0 = stage("3/6 SFT of a toy Qwen3 on the expert trajectories")
    sft_summary = run_sft(sft_cfg, tokenizer=tok)
    timings["sft"] = time.perf_counter() - t0

    # 4. evaluate base and SFT --------------------------------------------------------------
    k = s.eval_samples
    greedy = SamplingSettings(max_new_tokens=s.max_new_tokens, temperature=0.0)
    sampled = SamplingSettings(max_new_tokens=s.max_new_tokens, temperature=s.temperature)
    full_tasks = _stratified(test, s.full_eval_tasks, 3)
    table: dict[str, Any] = {}
    eval_farm = make_farm(sft_cfg.envs, out).start()  # the cache is shared with GRPO's farm
    engines: list[RolloutEngine | None] = []  # one rollout engine for every evaluated model

    def eval_model(name: str, params: Any, cfg: Qwen3Config, trained: bool) -> None:
        """Greedy on every held-out split; a trained model also avg@k there and on the train
        tasks (the random base model is scored greedy only: it solves nothing either way,
        and its answers run to the token limit, so sampling it is the costliest eval)."""
        version = len(table)  # the engine's weights change with each model (a version each)
        if not engines:
            engines.append(
                engine_from_config(sft_cfg.engine, params, cfg, s.seq_len + s.max_new_tokens)
            )
        common = dict(
            max_seq_len=s.seq_len,
            farm=eval_farm,
            tokenizer=tok,
            cfg=cfg,
            mesh=mesh,
            engine=engines[0],
            policy_version=version,
            farm_drivers=farm_drivers(sft_cfg.envs),
        )
        held = evaluate(
            params,
            tasks=test,
            sampling=greedy,
            label=f"{name}-test",
            full_tasks=full_tasks,
            **common,
        )

        def avg_at_k(tasks: Sequence[Any], split: str) -> dict[str, Any]:
            return evaluate(
                params,
                tasks=tasks,
                pipelines=("simplified",),
                sampling=sampled,
                samples=k,
                label=f"{name}-{split}-k",
                **common,
            )["simplified"]

        held_id = evaluate(
            params,
            tasks=test_id,
            pipelines=("simplified",),
            sampling=greedy,
            label=f"{name}-test_id",
            **common,
        )["simplified"]
        table[name] = {
            "test": {"simplified": held["simplified"], "full": held["full"]},
            "test_id": {"simplified": held_id},
        }
        msg = (
            f"{name}: held-out simplified {held['simplified']['success_rate']:.1%} greedy; "
            f"full {held['full']['success_rate']:.1%}; held-out of the train projects "
            f"{held_id['success_rate']:.1%} greedy"
        )
        if trained:
            held_k = avg_at_k(test, "test")
            held_id_k = avg_at_k(test_id, "test_id")
            table[name]["test"][f"simplified avg@{k}"] = held_k
            table[name]["test_id"][f"simplified avg@{k}"] = held_id_k
            msg += (
                f"; avg@{k}: held-out {held_k['success_rate']:.1%}, held-out of the train "
                f"projects {held_id_k['success_rate']:.1%}"
            )
            seen = avg_at_k(train, "train")
            table[name]["train"] = {f"simplified avg@{k}": seen}
            msg += f"; train simplified {seen['success_rate']:.1%} avg@{k}"
        console.print(msg)

    try:
        t0 = stage("4/6 evaluate the base and SFT models")
        sft_model = resolve_model(grpo_cfg, tok.vocab_size)  # GRPO starts from the SFT run
        sft_model_cfg, dtype = sft_model.cfg, jnp.dtype(sft_cfg.model.dtype)
        sft_params, _ = sft_model.load(mesh, dtype, grpo_cfg.train.seed)
        base_params = init_params(sft_model_cfg, jax.random.key(123), mesh=mesh, dtype=dtype)
        eval_model("base", base_params, sft_model_cfg, trained=False)
        eval_model("sft", sft_params, sft_model_cfg, trained=True)
        del base_params, sft_params
        timings["eval_base_sft"] = time.perf_counter() - t0

        # 5. GRPO ------------------------------------------------------------------------
        t0 = stage("5/6 GRPO in the simplified pipeline")
        rates = table["sft"]["train"][f"simplified avg@{k}"]["per_task"]
        grpo_tasks, rule = curriculum(train, rates, s.tasks_per_step)
        console.print(f"GRPO curriculum ({rule}): {len(grpo_tasks)} of {len(train)} train tasks")
        with make_farm(grpo_cfg.envs, out) as farm:
            grpo_summary = run_grpo(grpo_cfg, tokenizer=tok, farm=farm, tasks=grpo_tasks)
        grpo_summary["curriculum"] = {"rule": rule, "tasks": [t.id for t in grpo_tasks]}
        timings["grpo"] = time.perf_counter() - t0

        # 6. evaluate RL -----------------------------------------------------------------
        t0 = stage("6/6 evaluate the RL model; results")
        rl_model = dataclasses.replace(sft_model, orbax_dir=str(out / "grpo"))
        rl_params, _ = rl_model.load(mesh, dtype, grpo_cfg.train.seed)
        eval_model("rl", rl_params, sft_model_cfg, trained=True)
        timings["eval_rl"] = time.perf_counter() - t0
    finally:
        eval_farm.close()

    _print_table(console, table)
    png = _plot(out, out / "grpo" / "metrics.jsonl", table, k) if primary else None
    timings["total"] = time.perf_counter() - t_all
    summary = {
        "settings": dataclasses.asdict(s),
        "corpus": {
            "tasks": len(tasks),
            "train_used": len(train),
            "test_id_used": len(test_id),
            "test_id_tasks": sorted(kept_out),
            "test_used": len(test),
            "validated_sample_ok": valid_ok,
        },
        "expert": {"trajectories": n_recs, "solved": solved},
        "sft": sft_summary,
        "grpo": grpo_summary,
        "eval": table,
        "timings_s": timings,
        "reward_curve_png": str(png),
    }
    if primary:
        (out / MARKER).write_text(json.dumps(summary, indent=2, default=str))
        (out / "demo_running").unlink(missing_ok=True)
    console.print(f"wrote {out / MARKER} and {png}; total {timings['total'] / 60:.1f} min")
    return summary


def run_demo_seeds(
    out_dir: str | Path = "runs/demo",
    seeds: int = 2,
    quick: bool = False,
    config_path: str | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """`jaxrepair demo --seeds N`: the demo N times with training seeds 0..N-1 (the same task
    splits) into OUT/seed-I, then the mean, spread (sample standard deviation), min and max
    of every success rate over the seeds: `seeds_summary.json`, a table and `seeds.png`.
    A result that holds across seeds is one a reader can trust at this scale."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from jaxrepair import multihost

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    base = QUICK if quick else FULL
    out = Path(out_dir)
    if multihost.is_primary():
        out = _prepare_out(out)
        out.mkdir(parents=True, exist_ok=True)
    out = Path(multihost.broadcast_object(str(out)))
    runs = [
        run_demo(
            out / f"seed-{i}",
            config_path=config_path,
            overrides=overrides,
            settings=dataclasses.replace(base, seed=i),
        )
        for i in range(seeds)
    ]
    spread: dict[str, dict[str, Any]] = {}
    for model in runs[0]["eval"]:
        for split, pipes in runs[0]["eval"][model].items():
            for pipe in pipes:
                vals = np.asarray(
                    [r["eval"][model][split][pipe]["success_rate"] for r in runs], np.float64
                )
                spread[f"{model} | {split} | {pipe}"] = {
                    "values": vals.tolist(),
                    "mean": float(vals.mean()),
                    "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                    "min": float(vals.min()),
                    "max": float(vals.max()),
                }
    summary = {"seeds": seeds, "runs": [str(out / f"seed-{i}") for i in range(seeds)]}
    summary["success"] = spread
    console = Console(width=None if Console().is_terminal else 150)
    table = Table(title=f"jaxrepair demo over {seeds} seeds: success rate")
    for col in ("model | split | pipeline", "mean", "std", "min", "max"):
        table.add_column(col)
    for key, v in spread.items():
        table.add_row(
            key, f"{v['mean']:.1%}", f"{v['std']:.1%}", f"{v['min']:.1%}", f"{v['max']:.1%}"
        )
    console.print(table)
    if multihost.is_primary():
        (out / SEEDS_MARKER).write_text(json.dumps(summary, indent=2))
        _plot_seeds(out / "seeds.png", spread)
        (out / "demo_running").unlink(missing_ok=True)
    return summary


def _plot_seeds(path: Path, spread: dict[str, dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(spread)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(keys)), 4.5))
    means = [spread[k]["mean"] for k in keys]
    ax.bar(range(len(keys)), means, yerr=[spread[k]["std"] for k in keys], capsize=3)
    for i, k in enumerate(keys):
        ax.plot([i] * len(spread[k]["values"]), spread[k]["values"], "k.", ms=4)
    ax.set_xticks(range(len(keys)), keys, rotation=70, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (mean, std, each seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

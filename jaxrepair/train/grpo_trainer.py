"""GRPO against build-validation rewards: rollouts through the env farm, then clipped updates.

One GRPO step (``jaxrepair grpo CONFIG.toml``)::

    tasks_per_step tasks x group_size rollouts   (rollout.collect: farm + batched sampler)
    rewards -> group_advantages (valid mask: infra errors excluded)
    DAPO dynamic sampling (grpo.dynamic_sampling): groups whose rewards are all equal carry no
        signal; up to grpo.sampling_rounds collect rounds draw new tasks for them, and any
        still missing are filled with all-equal groups that stay masked. Reward metrics and
        rollouts.jsonl cover everything sampled, refill rounds included.
    padded arrays: tokens, targets, loss mask, sampler log-probs, advantages, truncated
    old log-probs = the trainer's log-probs under the params that sampled the batch, at the
        sampling temperature (so the ratio starts at 1; the gap to the sampler's own
        log-probs is logged as sampler_gap / sampler_gap_max)
    ref log-probs under a frozen copy of the initial params, only when kl_beta > 0
    epochs_per_batch passes over the batch in minibatches: grpo_loss + AdamW (trainer.Trainer)

Overlap (``grpo.overlap``): before the accelerator trains on batch k, the collector of batch
k+1 is started with a snapshot of the params from before that update (one step off-policy; the
importance ratio against those params corrects it) and run until its first generation is done;
its builds then run in the farm while the accelerator trains, and the collector is polled
between minibatch updates. Those interleaving points are the same on every process, so the
program stays a correct multi-controller program (see `collector`). The accelerator idle
fraction (1 - union of generation and training time / wall time) is logged either way.

Several JAX processes (one per host): every process runs this same loop on the same global
batch of rollouts (the collector exchanges environment results, so rollouts, advantages and
batches are identical everywhere); only process 0 writes rollouts, metrics and summaries; a
SIGTERM to any process stops all of them at the same step, after a checkpoint.

Checkpoints (trainer.Checkpointer via Trainer.save) hold params, optimizer state, the GRPO
step (the data position: tasks are drawn in a seeded order indexed by step) and the RNG, so a
resumed run continues with the same task sequence and optimizer state.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxrepair import multihost
from jaxrepair.config import GRPOConfig, RunConfig
from jaxrepair.envs.protocol import EpisodeTally
from jaxrepair.envs.task import Task
from jaxrepair.envs.tokenizer import Tokenizer
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.sharding import gather_to_host
from jaxrepair.train.analysis import HackingMonitor
from jaxrepair.train.collector import Collector, merge_accounting, merge_metrics
from jaxrepair.train.grpo import group_advantages, group_stats, grpo_loss
from jaxrepair.train.losses import DEFAULT_CHUNK, token_logprobs
from jaxrepair.train.rollout import (
    AcceleratorClock,
    Rollout,
    RolloutStats,
    SamplingSettings,
)
from jaxrepair.train.trainer import Trainer, global_batch

log = logging.getLogger(__name__)

BATCH_KEYS = (
    "tokens",
    "targets",
    "loss_mask",
    "old_logprobs",
    "sampler_logprobs",
    "advantages",
    "truncated",
)
SAMPLER_GAP_WARN = 0.05  # mean |trainer - sampler| log-prob gap that points to a real mismatch


# ----------------------------------------------------------------------------- arrays
def seq_bucket(n: int, max_len: int, minimum: int = 16) -> int:
    """Padded length for the longest row: the next size of the form 2^k or 3 * 2^(k-1)
    (16, 24, 32, 48, 64, 96, ...; at most 1.5x padding waste), capped at max_len, so new
    batch lengths rarely recompile the train step."""
    if n > max_len:
        raise ValueError(f"row of {n} tokens is longer than the maximum {max_len}")
    b = minimum
    while b < n:
        b = b * 3 // 2 if b & (b - 1) == 0 else b * 4 // 3  # 2^k -> 1.5 * 2^k -> 2^(k+1)
    return min(b, max_len)


def rollouts_to_batch(
    rollouts: Sequence[Rollout],
    advantages: np.ndarray,
    pad_id: int,
    max_len: int,
    keep: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Right-padded next-token arrays [N, T] for the trainer (see BATCH_KEYS).

    loss_mask is the generated-token mask, zeroed for invalid rollouts (infra errors) and for
    rows where `keep` is False (DAPO filter). `old_logprobs` starts as a copy of the sampler's
    log-probs; `GRPOLearner` replaces it with the trainer's own recomputation.
    """
    n = len(rollouts)
    if advantages.shape != (n,):
        raise ValueError(f"advantages shape {advantages.shape} != ({n},)")
    lengths = [max(len(r.tokens) - 1, 1) for r in rollouts]
    t = seq_bucket(max(lengths), max_len)
    tokens = np.full((n, t), pad_id, np.int32)
    targets = np.full((n, t), pad_id, np.int32)
    mask = np.zeros((n, t), np.float32)
    sampler = np.zeros((n, t), np.float32)
    for i, r in enumerate(rollouts):
        if len(r.tokens) < 2:
            continue
        m = len(r.tokens) - 1
        tokens[i, :m] = r.inputs
        targets[i, :m] = r.targets
        use = r.valid and (keep is None or bool(keep[i]))
        mask[i, :m] = np.asarray(r.target_mask, np.float32) * float(use)
        sampler[i, :m] = r.target_logprobs
    return {
        "tokens": tokens,
        "targets": targets,
        "loss_mask": mask,
        "old_logprobs": sampler.copy(),
        "sampler_logprobs": sampler,
        "advantages": np.asarray(advantages, np.float32),
        "truncated": np.asarray([r.truncated for r in rollouts], bool),
    }


def sampled_by(rollouts: Sequence[Rollout], shape: tuple[int, int], version: int) -> np.ndarray:
    """[N, T] mask of the batch's target positions (as `rollouts_to_batch` lays them out)
    whose token policy version `version` sampled."""
    out = np.zeros(shape, bool)
    for i, r in enumerate(rollouts):
        pos = np.flatnonzero(np.asarray(r.target_mask, np.int32) > 0)
        if r.versions and len(pos) == len(r.versions):
            out[i, pos] = np.asarray(r.versions) == version
    return out


def token_staleness(rollouts: Sequence[Rollout], learner_version: int) -> np.ndarray:
    """Learner steps between each generated token's sampling policy and `learner_version`."""
    return np.asarray([learner_version - v for r in rollouts for v in r.versions], np.int64)


@dataclasses.dataclass
class StepRollouts:
    """What one GRPO step collected: the groups it trains on (tasks_per_step x group_size,
    task-major), every rollout it sampled (refill rounds included), and where the task
    sequence stands after it."""

    trained: list[Rollout]
    sampled: list[Rollout]
    stats: RolloutStats
    cursor: int
    rounds: int


def has_signal(group: Sequence[Rollout]) -> bool:
    """At least two valid rollouts with different rewards: the group's advantages are not all
    zero (DAPO keeps such groups)."""
    rewards = np.asarray([r.reward for r in group], np.float32)
    valid = np.asarray([r.valid for r in group], bool)
    return not bool(group_stats(rewards, len(group), valid).all_equal[0])


def collect_step(
    collect_fn: Any,
    draw: Any,
    cursor: int,
    tasks_per_step: int,
    group_size: int,
    refill_rounds: int | None,
) -> StepRollouts:
    """One step's groups, tasks drawn from `cursor` on.

    `collect_fn(round, task_indices) -> (rollouts, RolloutStats)` (task-major groups);
    `draw(start, n)` -> task indices. refill_rounds None: one round of tasks_per_step tasks,
    every group trained. Otherwise (DAPO dynamic sampling) up to refill_rounds rounds, each
    drawing new tasks for the groups still missing a learning signal; groups still missing
    after the last round are filled with all-equal groups (masked by the learner).
    """
    kept: list[list[Rollout]] = []
    flat: list[list[Rollout]] = []
    sampled: list[Rollout] = []
    stats: RolloutStats | None = None
    drawn = rounds = 0
    for rnd in range(refill_rounds or 1):
        need = tasks_per_step - len(kept)
        rs, st = collect_fn(rnd, draw(cursor + drawn, need))
        if len(rs) != need * group_size:
            raise RuntimeError(f"collect returned {len(rs)} rollouts for {need} x {group_size}")
        drawn, rounds = drawn + need, rounds + 1
        stats = st if stats is None else stats.merge(st)
        sampled += rs
        for i in range(need):
            group = rs[i * group_size : (i + 1) * group_size]
            (kept if refill_rounds is None or has_signal(group) else flat).append(group)
        if len(kept) >= tasks_per_step:
            break
    batch = kept + flat[: tasks_per_step - len(kept)]
    assert stats is not None
    return StepRollouts([r for grp in batch for r in grp], sampled, stats, cursor + drawn, rounds)


# ----------------------------------------------------------------------------- loss
def grpo_loss_fn(
    cfg: Qwen3Config, grpo: GRPOConfig, chunk: int | None = DEFAULT_CHUNK, mesh: Mesh | None = None
):
    """loss_fn(params, batch, rng) for trainer.Trainer: log-probs at the sampling temperature
    (chunked lm head, with entropy) -> grpo_loss with the config's options."""

    def loss_fn(params, batch, rng):
        del rng
        lp, ent = token_logprobs(
            params,
            cfg,
            batch["tokens"],
            None,
            None,
            batch["targets"],
            grpo.temperature,
            chunk,
            mesh=mesh,
            return_entropy=True,
        )
        return grpo_loss(
            lp,
            batch["old_logprobs"],
            batch.get("ref_logprobs"),
            batch["advantages"],
            batch["loss_mask"],
            clip_low=grpo.clip_low,
            clip_high=grpo.clip_high,
            kl_beta=grpo.kl_beta,
            aggregation=grpo.aggregation,
            dual_clip=grpo.dual_clip,
            ratio_level=grpo.ratio_level,
            truncated=batch["truncated"] if grpo.mask_truncated else None,
            sampler_logprobs=batch["sampler_logprobs"],
            tis_cap=grpo.tis_cap,
            entropy=ent,
        )

    return loss_fn


# ----------------------------------------------------------------------------- learner
class GRPOLearner:
    """Rollouts -> advantages -> padded batch -> `epochs_per_batch` passes of minibatch updates.

    `trainer` is a trainer.Trainer built with `grpo_loss_fn`; `ref_params` (a frozen copy of
    the initial params) is needed only when kl_beta > 0.
    """

    def __init__(
        self,
        cfg: Qwen3Config,
        trainer: Trainer,
        grpo: GRPOConfig,
        pad_id: int,
        max_len: int,
        *,
        chunk: int | None = DEFAULT_CHUNK,
        mesh: Mesh | None = None,
        ref_params: Any = None,
        clock: AcceleratorClock | None = None,
        seed: int = 0,
    ):
        if grpo.kl_beta > 0 and ref_params is None:
            raise ValueError(
                "grpo.kl_beta > 0 needs ref_params (a frozen copy of the initial params)"
            )
        self.cfg, self.trainer, self.grpo = cfg, trainer, grpo
        self.pad_id, self.max_len = pad_id, max_len
        self.ref_params = ref_params if grpo.kl_beta > 0 else None
        self.clock = clock
        self.seed = seed
        self.mesh = mesh
        temp = grpo.temperature

        @jax.jit
        def _lp(params, tokens, targets):
            return token_logprobs(params, cfg, tokens, None, None, targets, temp, chunk, mesh=mesh)

        self._lp = _lp

    def logprobs(self, params: Any, batch: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
        """The trainer's log-probs of the targets under `params`, `rows` sequences at a time."""
        n = batch["tokens"].shape[0]
        out = []
        for s in range(0, n, rows):
            tok, tgt = batch["tokens"][s : s + rows], batch["targets"][s : s + rows]
            if self.mesh is not None:  # rows split over the batch axes, each process its own
                tok, tgt = global_batch(tok, self.mesh), global_batch(tgt, self.mesh)
            out.append(gather_to_host(self._lp(params, tok, tgt)))
        return np.concatenate(out, axis=0)

    def _busy(self):
        return self.clock.busy() if self.clock is not None else _Null()

    def update(
        self,
        rollouts: Sequence[Rollout],
        behaviour_params: Any,
        step: int,
        sampled: Sequence[Rollout] | None = None,
        between_updates: Callable[[], Any] | None = None,
        behaviour_version: int | None = None,
    ) -> dict[str, float]:
        """One GRPO step on `rollouts` (task-major, group_size per task) sampled with
        `behaviour_params`; returns host metrics. Reward metrics describe `sampled` (everything
        the step sampled, refill rounds included; default `rollouts`): with DAPO refill the
        trained groups are selected for mixed outcomes, so their reward is not the policy's.
        `between_updates` runs after every minibatch update (GRPO overlap polls the next
        batch's collector there). With partial rollouts the tokens come from several policy
        versions: `behaviour_params` is then the newest (the proximal policy of decoupled PPO;
        the sampler's log-probs correct the older tokens through TIS) and `behaviour_version`
        its version, so the sampler-vs-trainer check compares only that version's tokens."""
        g = self.grpo
        n = len(rollouts)
        if n % g.group_size:
            raise ValueError(f"{n} rollouts is not a multiple of group_size={g.group_size}")
        rewards = np.asarray([r.reward for r in rollouts], np.float32)
        valid = np.asarray([r.valid for r in rollouts], bool)
        adv = np.asarray(group_advantages(rewards, g.group_size, g.advantage_scale, valid=valid))
        gs = group_stats(rewards, g.group_size, valid)
        keep = np.asarray(gs.keep) if g.dynamic_sampling else valid
        batch = rollouts_to_batch(rollouts, adv, self.pad_id, self.max_len, keep)
        mb = g.minibatch_size or n
        t0 = time.perf_counter()
        with self._busy():
            old = self.logprobs(behaviour_params, batch, mb)
            if self.ref_params is not None:
                batch["ref_logprobs"] = self.logprobs(self.ref_params, batch, mb)
        m = batch["loss_mask"] > 0
        if behaviour_version is not None:
            m &= sampled_by(rollouts, m.shape, behaviour_version)
        gap = np.abs(old - batch["sampler_logprobs"])[m]
        gap_mean = float(gap.mean()) if gap.size else 0.0
        if gap_mean > SAMPLER_GAP_WARN:
            log.warning(
                "sampler vs trainer log-prob gap %.4f (max %.4f) on the same params: the ratio "
                "does not start at 1 (temperature or tokenization mismatch?)",
                gap_mean,
                float(gap.max()),
            )
        batch["old_logprobs"] = old.astype(np.float32)
        order_rng = np.random.default_rng([self.seed, step])
        sums: dict[str, float] = {}
        updates = 0
        with self._busy():
            for _ in range(g.epochs_per_batch):
                perm = order_rng.permutation(n)
                for s in range(0, n, mb):
                    idx = perm[s : s + mb]
                    sub = {k: v[idx] for k, v in batch.items()}
                    metrics = jax.device_get(self.trainer.train_step(sub))
                    updates += 1
                    if between_updates is not None:
                        between_updates()
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
        train_s = time.perf_counter() - t0
        out = {k: v / max(updates, 1) for k, v in sums.items()}
        n_valid = int(valid.sum())
        seen = [r for r in (sampled if sampled is not None else rollouts) if r.valid]

        def seen_mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else 0.0

        out.update(
            reward_mean=seen_mean([r.reward for r in seen]),
            pass_rate=seen_mean([r.outcome == "pass" for r in seen]),
            truncated_frac=seen_mean([r.truncated for r in seen]),
            tool_calls_mean=seen_mean([r.tool_calls for r in seen]),
            tamper_rate=seen_mean([r.tampered for r in seen]),
            reward_mean_trained=float(rewards[valid].mean()) if n_valid else 0.0,
            valid_rollouts=n_valid,
            groups_all_equal=int(gs.num_all_equal),
            groups_all_solved=int(gs.num_all_max),
            rows_trained=int((batch["loss_mask"].sum(axis=1) > 0).sum()),
            adv_abs_mean=float(np.abs(adv[valid]).mean()) if n_valid else 0.0,
            sampler_gap_recompute=gap_mean,
            sampler_gap_max=float(gap.max()) if gap.size else 0.0,
            gen_tokens_mean=float(np.mean([r.generated_tokens for r in rollouts])),
            seq_len_padded=int(batch["tokens"].shape[1]),
            updates=updates,
            train_s=train_s,
        )
        return out


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


# ----------------------------------------------------------------------------- run state
class GRPOState:
    """The data position of a GRPO run (saved in checkpoint meta as the loader state).

    Tasks are drawn one after another from a fresh seeded permutation per epoch; `cursor`
    counts the tasks drawn so far. Without dynamic sampling a step draws exactly
    tasks_per_step; with DAPO refill it draws until enough groups carry signal, so the
    position is the cursor, not the step.
    """

    def __init__(self, num_tasks: int, tasks_per_step: int, seed: int):
        self.num_tasks, self.tasks_per_step, self.seed = num_tasks, tasks_per_step, seed
        self.step = 0
        self.cursor = 0

    def draw(self, start: int, n: int) -> list[int]:
        """Task indices start .. start + n - 1 of the run's seeded sequence."""
        out = []
        for i in range(start, start + n):
            epoch, pos = divmod(i, self.num_tasks)
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_tasks)
            out.append(int(perm[pos]))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "grpo_step": self.step,
            "task_cursor": self.cursor,
            "num_tasks": self.num_tasks,
            "seed": self.seed,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state.get("num_tasks", self.num_tasks)) != self.num_tasks:
            log.warning(
                "resuming with %d tasks; the checkpoint was trained on %s: the task order differs",
                self.num_tasks,
                state.get("num_tasks"),
            )
        self.step = int(state["grpo_step"])
        self.cursor = int(state.get("task_cursor", self.step * self.tasks_per_step))


def load_train_tasks(config: RunConfig) -> list[Task]:
    """Train-split tasks of envs.corpus (None = the bundled corpus), optionally only grpo.tasks."""
    from jaxrepair.train.run_setup import corpus_path, corpus_tasks

    if not config.grpo.tasks:
        return corpus_tasks(config.envs, "train")
    by_id = {t.id: t for t in corpus_tasks(config.envs)}
    missing = [t for t in config.grpo.tasks if t not in by_id]
    if missing:
        raise ValueError(f"grpo.tasks: no task {missing} in {corpus_path(config.envs)}")
    return [by_id[t] for t in config.grpo.tasks]


class RolloutLog:
    """Every sampled rollout as a JSON line: appended to `rollouts.jsonl` in a local run
    directory; on object storage (no appends) one `rollouts/STEP.jsonl` per GRPO step."""

    def __init__(self, out_dir: Any):
        from jaxrepair.train.storage import is_uri

        self.out_dir = out_dir
        self.local = None if is_uri(out_dir) else open(out_dir / "rollouts.jsonl", "a")  # noqa: SIM115

    def write(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(row, default=str) + "\n" for row in rows)
        if self.local is not None:
            self.local.write(text)
            self.local.flush()
        else:
            (self.out_dir / "rollouts" / f"{step:06d}.jsonl").write_text(text)

    def close(self) -> None:
        if self.local is not None:
            self.local.close()


def plot_reward_curve(metrics_path: Any, out_png: Any) -> Any | None:
    """Reward mean, pass rate and the reward-hacking rate per GRPO step (last row per step wins
    after a resume)."""
    if not metrics_path.is_file():
        return None
    rows: dict[int, dict] = {}
    for line in metrics_path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if "reward_mean" in row:
                rows[int(row["step"])] = row
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(rows)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [rows[s]["reward_mean"] for s in steps], marker="o", label="reward mean")
    ax.plot(steps, [rows[s].get("pass_rate", math.nan) for s in steps], ls="--", label="pass rate")
    evals = [s for s in steps if "heldout_avg_at_k" in rows[s]]
    if evals:
        ax.plot(
            evals,
            [rows[s]["heldout_avg_at_k"] for s in evals],
            marker="s",
            color="tab:green",
            label="held-out avg@k",
        )
    ax.plot(
        steps,
        [rows[s].get("hack_rate", math.nan) for s in steps],
        ls=":",
        color="tab:red",
        label="reward hacking (guard rate)",
    )
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("GRPO reward")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    out_png.write_bytes(buf.getvalue())  # a local path or a storage URI (etils)
    return out_png


def warn_all_truncated(
    step: int, sampled: Sequence[Rollout], grpo: GRPOConfig, max_len: int
) -> str:
    """Log (once per run, by the caller) that a step's rollouts were all truncated: reward 0
    everywhere, so the run looks fine but learns nothing. Returns the message."""
    reasons: dict[str, int] = {}
    for r in sampled:
        if r.valid and r.truncated:
            why = r.truncation_reason or "other"
            reasons[why] = reasons.get(why, 0) + 1
    fixes = []
    if reasons.get("max_seq_len"):
        fixes.append(f"raise data.seq_len (now {max_len}; prompt + answers must fit)")
    if reasons.get("max_new_tokens"):
        fixes.append(
            f"raise grpo.max_new_tokens (now {grpo.max_new_tokens}) or set "
            "grpo.submit_unfinished=true"
        )
    if reasons.get("max_turns"):
        fixes.append("raise envs.max_steps")
    msg = (
        f"GRPO step {step}: all {sum(reasons.values())} sampled rollouts were truncated "
        f"({', '.join(f'{n} at {k}' for k, n in sorted(reasons.items()))}): reward 0 "
        f"everywhere, nothing to learn; {'; '.join(fixes) or 'check the episode caps'}"
    )
    log.warning(msg)
    return msg


# ----------------------------------------------------------------------------- entry point
def _copy_tree(params: Any) -> Any:
    return jax.tree.map(jnp.copy, params)


def run_grpo(
    config: RunConfig,
    *,
    tokenizer: str | Tokenizer | None = None,
    mesh: Mesh | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    farm: Any = None,
    tasks: Sequence[Task] | None = None,
    existing: str = "check",
) -> dict[str, Any]:
    """`jaxrepair grpo CONFIG.toml`: GRPO in the configured pipeline; returns a summary dict.

    Resumes from `train.out_dir/checkpoints` when `train.resume` and a good checkpoint exists;
    otherwise starts from `train.init_from` / `model.hf_dir` (an SFT run dir, orbax or HF) or a
    random init of `model.preset`. `data.seq_len` is the longest episode transcript trained on.
    Optional arguments replace what the config would build (for tests and the demo):
    `tokenizer`, `mesh`, `farm` (a started EnvFarm), `tasks`; `stop_after` ends the call after
    that many GRPO steps (the run can be resumed). An out_dir holding a run with other
    settings is refused, or handled as `existing` says (see `jaxrepair.train.rundir`).
    """
    from jaxrepair.engine.jax_engine import engine_from_config
    from jaxrepair.train.checkpoint import PreemptionSync
    from jaxrepair.train.run_setup import farm_drivers, make_farm, start_training
    from jaxrepair.train.rundir import finish_run
    from jaxrepair.train.trainer import DIGEST_ENV, MetricsLogger, lora_run, shard_digests

    t_start = time.perf_counter()
    # refuses a directory holding another run
    setup = start_training(config, "grpo", existing, tokenizer=tokenizer, mesh=mesh)
    run, config, tok, mesh = setup.run, setup.config, setup.tokenizer, setup.mesh
    g, tr = config.grpo, config.train
    task_list = list(tasks) if tasks is not None else load_train_tasks(config)
    if len(task_list) < 1:
        raise ValueError("GRPO needs at least one task")
    cfg = setup.source.cfg
    max_len = config.data.seq_len
    chunk = min(DEFAULT_CHUNK, max_len)
    n_rollouts = g.tasks_per_step * g.group_size
    mb = g.minibatch_size or n_rollouts
    total_updates = tr.steps * g.epochs_per_batch * (n_rollouts // mb)
    out_dir = run.path

    trainer = setup.trainer(grpo_loss_fn(cfg, g, chunk, mesh), total_updates)
    lora = lora_run(setup)
    if lora is not None:
        trainer.use_lora(lora)
    state = GRPOState(len(task_list), g.tasks_per_step, tr.seed)
    resumed = setup.restore_or_init(trainer, state, lambda: state.step, "GRPO step")
    ref_params = None
    if g.kl_beta > 0:  # the reference is the run's starting point, also after a resume
        if trainer.base is not None:  # LoRA: the frozen base itself, no second copy
            ref_params = trainer.base
        else:
            ref_params = setup.initial_params() if resumed else _copy_tree(trainer.params)

    clock = AcceleratorClock()
    learner = GRPOLearner(
        cfg,
        trainer,
        g,
        tok.pad_id,
        max_len,
        chunk=chunk,
        mesh=mesh,
        ref_params=ref_params,
        clock=clock,
        seed=tr.seed,
    )
    sampling = SamplingSettings.from_grpo(g)
    # processes 0..drivers-1 drive a farm; a farm passed in is this process's (`make_farm`)
    drivers = farm_drivers(config.envs)
    own_farm = farm is None
    if own_farm:
        farm = make_farm(config.envs, out_dir).start()
    base_key = jax.random.key(tr.seed)
    engine = engine_from_config(
        config.engine, trainer.params, cfg, max_len + sampling.max_new_tokens, version=state.step
    )

    def collector(step: int, rnd: int, params: Any, version: int, idx: Sequence[int]) -> Collector:
        """Step `step`'s collect round `rnd`, sampled by `params` (learner version `version`)."""
        key = jax.random.fold_in(base_key, step)
        return Collector(
            params,
            cfg,
            [task_list[i] for i in idx],
            g.group_size,
            farm,
            tok,
            sampling,
            key if rnd == 0 else jax.random.fold_in(key, 1_000_003 + rnd),
            g.pipeline,
            max_len,
            mesh=mesh,
            engine=engine,
            policy_version=version,
            episode_prefix=f"s{step}" if rnd == 0 else f"s{step}r{rnd}",
            clock=clock,
            truncate_unfinished=not g.submit_unfinished,
            farm_drivers=drivers,
        ).start()

    def collect_batch(
        step: int, params: Any, version: int, cursor: int, first: Collector | None
    ) -> StepRollouts:
        """Step `step`'s groups; round 0 from `first` when it was started ahead (overlap)."""

        def collect_fn(rnd: int, idx: list[int]):
            if rnd == 0 and first is not None:
                return first.result()
            return collector(step, rnd, params, version, idx).result()

        return collect_step(
            collect_fn,
            state.draw,
            cursor,
            g.tasks_per_step,
            g.group_size,
            g.sampling_rounds if g.dynamic_sampling else None,
        )

    heldout_tasks: list[Task] = []

    def heldout(version: int, ahead: tuple[Collector, Any, int] | None) -> dict[str, float]:
        """train.eval_every: held-out avg@k and pass@k of the current weights (the test split,
        this run's pipeline and sampling; the same seed every time, so that evaluations differ
        by the weights only). The next batch's collector gets its weights back afterwards."""
        from jaxrepair.collect import spread_over_categories
        from jaxrepair.train.evaluate import evaluate
        from jaxrepair.train.run_setup import corpus_tasks

        if not heldout_tasks:
            heldout_tasks.extend(
                spread_over_categories(corpus_tasks(config.envs, "test"), g.eval_limit)
            )
        t0 = time.perf_counter()
        res = evaluate(
            trainer.params,
            cfg,
            tok,
            heldout_tasks,
            farm,
            pipelines=(g.pipeline,),
            sampling=sampling,
            max_seq_len=max_len,
            seed=tr.seed,
            label=f"heldout-s{version}",
            mesh=mesh,
            samples=g.eval_samples if sampling.temperature > 0 else 1,
            engine=engine,
            policy_version=version,
            farm_drivers=drivers,
        )[g.pipeline]
        if ahead is not None:
            ahead[0].set_policy(trainer.params if ahead[1] is None else ahead[1], ahead[2])
        return {
            "heldout_avg_at_k": res["success_rate"],
            "heldout_pass_at_k": res["tasks_solved_rate"],
            "heldout_samples": float(res["samples_per_task"]),
            "heldout_s": time.perf_counter() - t0,
        }

    start = state.step
    end = tr.steps if stop_after is None else min(tr.steps, start + stop_after)
    primary = multihost.is_primary()
    logger = MetricsLogger(out_dir, tr.steps, start, tensorboard=True, progress=progress)
    traj = RolloutLog(out_dir) if primary else None
    history: list[dict[str, float]] = []
    totals = EpisodeTally()  # every episode of every step, from the driver's own counts
    hacking = HackingMonitor()  # warns once when the share of guard-tripping answers rises
    preempted = False
    t_loop0 = time.perf_counter()
    # next step's collector, its params and their learner version
    ahead: tuple[Collector, Any, int] | None = None
    saved_at = None
    all_truncated = 0  # steps whose every sampled rollout was truncated (reward 0)
    try:
        with PreemptionSync() as preempt:
            for step in range(start, end):
                t_step0 = time.perf_counter()
                if ahead is None:
                    behaviour, version, first = trainer.params, step, None
                else:
                    first, behaviour, version = ahead
                if version == step:  # on-policy, or partial rollouts took this step's weights
                    behaviour = trainer.params
                got = collect_batch(step, behaviour, version, state.cursor, first)
                rollouts, cstats = got.trained, got.stats
                stale = [r.staleness(step) for r in got.sampled if r.versions]
                if stale and max(stale) > g.max_staleness:
                    raise RuntimeError(
                        f"step {step}: a rollout sampled {max(stale)} learner steps ago exceeds "
                        f"grpo.max_staleness={g.max_staleness}"
                    )
                ahead = None
                between = None
                if g.overlap and step + 1 < end:
                    snap = _copy_tree(trainer.params)  # the live params are donated by updates
                    nxt = collector(
                        step + 1, 0, snap, step, state.draw(got.cursor, g.tasks_per_step)
                    )
                    nxt.run(until_generated=True)  # its builds now run while we train
                    ahead = (nxt, snap, step)
                    # with partial rollouts the turns after the first wait for the new weights:
                    # between updates only the farm's results are taken in, so which version
                    # samples a token never depends on how fast the builds were
                    between = lambda c=nxt: c.poll(0.0, generate=not g.partial_rollouts)  # noqa: E731
                metrics = learner.update(
                    rollouts,
                    behaviour,
                    step,
                    sampled=got.sampled,
                    between_updates=between,
                    behaviour_version=version,
                )
                if ahead is not None and g.partial_rollouts:
                    # the next batch's episodes in flight continue under the new weights (no
                    # copy: no update runs before that collector's result() next step)
                    ahead[0].set_policy(trainer.params, step + 1)
                    ahead = (ahead[0], None, step + 1)
                metrics["sampling_rounds"] = got.rounds
                metrics["groups_sampled"] = len(got.sampled) // g.group_size
                if metrics["truncated_frac"] >= 1.0:
                    all_truncated += 1
                    if all_truncated == 1:
                        warn_all_truncated(step + 1, got.sampled, g, max_len)
                state.step = step + 1
                state.cursor = got.cursor
                t_step1 = time.perf_counter()
                metrics.update(cstats.to_dict())
                if tr.eval_every and state.step % tr.eval_every == 0:
                    metrics.update(heldout(state.step, ahead))
                metrics["idle_frac"] = clock.idle_fraction(t_step0, t_step1)
                metrics["step_s"] = t_step1 - t_step0
                metrics["overlap"] = float(g.overlap)
                metrics["staleness_max"] = float(max(stale, default=0))
                metrics["staleness_mean"] = float(np.mean(stale)) if stale else 0.0
                metrics.update(
                    hacking.update(
                        state.step,
                        [
                            (r.info.get("guard") or "other") if r.tampered else None
                            for r in got.sampled
                            if r.valid
                        ],
                    )
                )
                tok_stale = token_staleness(got.sampled, step)
                metrics["token_staleness_mean"] = float(tok_stale.mean()) if tok_stale.size else 0.0
                metrics["stale_token_frac"] = (
                    float((tok_stale > 0).mean()) if tok_stale.size else 0.0
                )
                totals += cstats.tally
                if not cstats.complete:
                    raise RuntimeError(
                        f"step {step}: rollout accounting incomplete {cstats.accounting}"
                    )
                if traj is not None:
                    trained_ids = {r.episode_id for r in rollouts}
                    traj.write(
                        state.step,
                        [
                            {
                                "step": state.step,
                                "trained": r.episode_id in trained_ids,
                                **r.trajectory(g.pipeline),
                            }
                            for r in got.sampled
                        ],
                    )
                logger.log(state.step, metrics)
                if logger.bar is not None:
                    logger.bar.set_postfix(
                        reward=f"{metrics['reward_mean']:.3f}",
                        pass_rate=f"{metrics['pass_rate']:.2f}",
                        eps=f"{metrics['episodes_per_s']:.2f}",
                        idle=f"{metrics['idle_frac']:.2f}",
                        refresh=False,
                    )
                logger.advance()
                history.append({k: metrics[k] for k in ("reward_mean", "pass_rate", "idle_frac")})
                trainer.ckpt.poll()
                if preempt.should_stop(state.step):  # a signal to any process stops all
                    log.warning("signal received: saving GRPO step %d and stopping", state.step)
                    trainer.save(state)
                    saved_at = state.step
                    preempted = True
                    break
                if tr.checkpoint_every and state.step % tr.checkpoint_every == 0:
                    trainer.save(state)
                    saved_at = state.step
            if not preempted and state.step > start and saved_at != state.step:
                trainer.save(state)
            trainer.ckpt.wait()
    finally:
        if ahead is not None:  # a batch started for a step we will not train on
            ahead[0].close()
        if traj is not None:
            traj.close()
        logger.close()
        accounting, farm_metrics = farm.accounting(), farm.metrics()
        if own_farm:
            farm.close()
        trainer.close()
    wall_loop = time.perf_counter() - t_loop0
    # every process's farm ran its share of the episodes: one accounting for the job
    every = multihost.allgather_objects((accounting, farm_metrics))
    accounting = merge_accounting([a for a, _ in every])
    farm_metrics = merge_metrics([m for _, m in every])
    png = None
    if primary:
        png = plot_reward_curve(out_dir / "metrics.jsonl", out_dir / "reward_curve.png")
    steps_done = state.step - start
    summary = {
        "step": state.step,
        "start_step": start,
        "total_steps": tr.steps,
        "resumed": resumed,
        "preempted": preempted,
        "pipeline": g.pipeline,
        "overlap": g.overlap,
        "rewards": [h["reward_mean"] for h in history],
        "pass_rates": [h["pass_rate"] for h in history],
        "idle_frac": clock.idle_fraction(t_loop0, t_loop0 + wall_loop) if steps_done else None,
        "episodes_per_s": totals.started / wall_loop if steps_done else None,
        "accounting": totals.to_dict(),
        "farm_accounting": accounting,
        "farm_metrics": {
            k: v for k, v in farm_metrics.items() if isinstance(v, (int, float, bool))
        },
        "optimizer_updates": trainer.step,
        "params": cfg.num_params(),
        "out_dir": str(out_dir),
        "checkpoint_dir": str(out_dir / "checkpoints"),
        "reward_curve": str(png) if png else None,
        "steps_all_truncated": all_truncated,
        "run_dir_state": run.state,
        "wall_s": time.perf_counter() - t_start,
    }
    if os.environ.get(DIGEST_ENV):
        summary["params_digest"] = shard_digests(trainer.params)
    finish_run(run, summary)
    return summary


__all__ = [
    "GRPOLearner",
    "GRPOState",
    "StepRollouts",
    "collect_step",
    "grpo_loss_fn",
    "has_signal",
    "load_train_tasks",
    "plot_reward_curve",
    "rollouts_to_batch",
    "run_grpo",
    "seq_bucket",
]

"""Supervised fine-tuning on agent trajectories: JSONL -> packed rows -> masked next-token loss.

Each trajectory (one JSONL line: `messages` in Qwen3 chat roles with tool calls, optional
`tools`) is rendered and tokenized by `jaxrepair.envs.chat.encode_chat`, which marks the
assistant tokens to learn. A document of n tokens becomes n-1 (input, target, weight) triples,
shifted *within the document*, so when documents are packed into one row the last token of a
document never predicts the first token of the next one. Rows are filled first-fit; a document
longer than `seq_len` positions is split into pieces of `seq_len` positions aligned to its end
(the last assistant turn keeps the longest context), so every learned token is trained exactly
once and no assistant turn is dropped (pieces are counted and logged).

Row arrays ([rows, seq_len]): tokens, targets, loss_mask (float32 weights), segment_ids
(1, 2, ... per document; 0 = padding), positions (restarting at 0 in each document).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxrepair.config import RunConfig
from jaxrepair.envs.tokenizer import Tokenizer
from jaxrepair.model.config import Qwen3Config
from jaxrepair.train.losses import DEFAULT_CHUNK, chunked_cross_entropy

log = logging.getLogger(__name__)

ROW_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions")


# ----------------------------------------------------------------------------- trajectories
def load_trajectories(paths: str | Path | Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read trajectory JSONL files (one episode per line); bad lines raise naming file:line."""
    if isinstance(paths, str | Path):
        paths = [paths]
    out: list[dict[str, Any]] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"trajectory file not found: {p}")
        with p.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{p}:{lineno}: not valid JSON: {e}") from None
                if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list):
                    raise ValueError(f"{p}:{lineno}: a trajectory needs a 'messages' list")
                rec.setdefault("_source", f"{p}:{lineno}")
                out.append(rec)
    return out


def encode_trajectories(
    trajectories: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    thinking: str = "keep",
    min_reward: float | None = None,
    prompt_weight: float = 0.0,
) -> list[tuple[list[int], list[float]]]:
    """(token ids, loss weights) per trajectory via the Qwen3 chat template.

    Assistant tokens weigh 1, every other token `prompt_weight` (0: assistant tokens only).
    thinking="keep" keeps every assistant turn's <think> block, "drop" removes them.
    Trajectories with reward < min_reward (when given) are skipped and counted in the log.
    """
    from jaxrepair.envs.chat import encode_chat

    if thinking not in ("keep", "drop"):
        raise ValueError(f"thinking={thinking!r}; choose keep or drop")
    docs, skipped = [], 0
    for t in trajectories:
        if min_reward is not None and float(t.get("reward", 0.0)) < min_reward:
            skipped += 1
            continue
        try:
            ids, mask = encode_chat(
                t["messages"], tokenizer, tools=t.get("tools"), keep_thinking=thinking == "keep"
            )
        except ValueError as e:
            raise ValueError(f"{t.get('_source', 'trajectory')}: {e}") from None
        docs.append((ids, [1.0 if m else prompt_weight for m in mask]))
    if skipped:
        log.info("skipped %d trajectories with reward < %s", skipped, min_reward)
    return docs


# ----------------------------------------------------------------------------- packing
@dataclasses.dataclass
class PackedRows:
    tokens: np.ndarray
    targets: np.ndarray
    loss_mask: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    stats: dict[str, Any]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def rows(self, idx: np.ndarray | slice) -> dict[str, np.ndarray]:
        return {k: getattr(self, k)[idx] for k in ROW_KEYS}


def shift_document(ids: Sequence[int], mask: Sequence[int]) -> tuple[np.ndarray, ...]:
    """(inputs, targets, weights) of one document: position t predicts token t+1, learned
    where token t+1 is an assistant token."""
    ids_a = np.asarray(ids, np.int32)
    mask_a = np.asarray(mask, np.float32)
    if ids_a.shape != mask_a.shape:
        raise ValueError(f"ids ({ids_a.shape}) and loss mask ({mask_a.shape}) differ in length")
    return ids_a[:-1], ids_a[1:], mask_a[1:]


def split_positions(n: int, seq_len: int) -> list[slice]:
    """Slices of a document's `n` shifted positions into pieces of at most `seq_len`, aligned
    to the end: [n - seq_len, n), [n - 2 seq_len, n - seq_len), ..., returned in order."""
    cuts = list(range(n, 0, -seq_len))
    return [slice(max(c - seq_len, 0), c) for c in reversed(cuts)]


def pack_documents(
    docs: Sequence[tuple[Sequence[int], Sequence[int]]],
    seq_len: int,
    pad_id: int = 0,
    packing: bool = True,
) -> PackedRows:
    """First-fit packing of shifted documents into rows of `seq_len` (see module docstring).

    Documents with fewer than 2 tokens or no learned token are dropped (counted). A document
    of more than seq_len + 1 tokens is split into end-aligned pieces of seq_len positions, each
    with its own loss weights and positions from 0 (pieces without a learned token are left
    out, counted). With packing=False each piece gets its own row.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    stats: dict[str, Any] = dict(
        documents=len(docs),
        split=0,
        pieces=0,
        pieces_unmasked=0,
        dropped_short=0,
        dropped_unmasked=0,
    )
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    longest = 0
    for ids, mask in docs:
        if len(ids) < 2:
            stats["dropped_short"] += 1
            continue
        x, y, w = shift_document(ids, mask)
        if not w.any():
            stats["dropped_unmasked"] += 1
            continue
        longest = max(longest, len(ids))
        parts = split_positions(len(x), seq_len)
        stats["split"] += len(parts) > 1
        for sl in parts:
            if not w[sl].any():  # e.g. the system prompt and task statement of a long document
                stats["pieces_unmasked"] += 1
                continue
            pieces.append((x[sl], y[sl], w[sl]))
    stats["pieces"] = len(pieces)
    if stats["split"]:
        log.warning(
            "%d of %d documents are longer than seq_len=%d (longest %d tokens): split into "
            "pieces of seq_len positions (%d pieces trained, %d without learned tokens left "
            "out); raise data.seq_len to train them with their whole context",
            stats["split"],
            len(docs),
            seq_len,
            longest,
            len(pieces),
            stats["pieces_unmasked"],
        )
    if not pieces:
        raise ValueError(
            f"no trainable documents: {stats['documents']} given, {stats['dropped_short']} too "
            f"short, {stats['dropped_unmasked']} without assistant tokens"
        )
    # first fit: each document goes into the first row with room for it
    remaining = np.zeros(0, np.int64)
    assignment: list[list[int]] = []
    for j, (x, _, _) in enumerate(pieces):
        n = len(x)
        fits = np.flatnonzero(remaining >= n) if packing else np.zeros(0, np.int64)
        if fits.size:
            r = int(fits[0])
        else:
            r = len(assignment)
            assignment.append([])
            remaining = np.append(remaining, seq_len)
        assignment[r].append(j)
        remaining[r] -= n
    rows = len(assignment)
    out = {
        "tokens": np.full((rows, seq_len), pad_id, np.int32),
        "targets": np.full((rows, seq_len), pad_id, np.int32),
        "loss_mask": np.zeros((rows, seq_len), np.float32),
        "segment_ids": np.zeros((rows, seq_len), np.int32),
        "positions": np.zeros((rows, seq_len), np.int32),
    }
    for r, members in enumerate(assignment):
        pos = 0
        for seg, j in enumerate(members, 1):
            x, y, w = pieces[j]
            n = len(x)
            sl = slice(pos, pos + n)
            out["tokens"][r, sl] = x
            out["targets"][r, sl] = y
            out["loss_mask"][r, sl] = w
            out["segment_ids"][r, sl] = seg
            out["positions"][r, sl] = np.arange(n)
            pos += n
    stats["rows"] = rows
    stats["tokens"] = int((out["segment_ids"] > 0).sum())
    stats["loss_tokens"] = int(out["loss_mask"].sum())
    stats["fill"] = stats["tokens"] / (rows * seq_len)
    return PackedRows(**out, stats=stats)


class PackedLoader:
    """Deterministic batches of packed rows; its position is part of every checkpoint.

    Each epoch visits the rows in a permutation drawn from (seed, epoch); a batch may span an
    epoch boundary. `state_dict()` is (epoch, index), so a resumed run continues mid-epoch.
    """

    def __init__(self, rows: PackedRows, batch_size: int, seed: int = 0, shuffle: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rows = rows
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.index = 0

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.rows))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))

    def next_batch(self) -> dict[str, np.ndarray]:
        idx = []
        order = self._order(self.epoch)
        while len(idx) < self.batch_size:
            if self.index >= len(order):
                self.epoch += 1
                self.index = 0
                order = self._order(self.epoch)
            idx.append(order[self.index])
            self.index += 1
        return self.rows.rows(np.asarray(idx))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "rows": len(self.rows)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("rows", len(self.rows)) != len(self.rows) or state.get("seed") != self.seed:
            raise ValueError(
                f"checkpointed data position is for {state.get('rows')} rows / seed "
                f"{state.get('seed')}, but this run has {len(self.rows)} rows / seed {self.seed}: "
                "the data or seed changed, so resuming would not continue the same run"
            )
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


# ----------------------------------------------------------------------------- loss / eval
def sft_loss_fn(cfg: Qwen3Config, chunk: int | None = DEFAULT_CHUNK, mesh: Mesh | None = None):
    """loss_fn(params, batch, rng) for the Trainer: masked token-mean cross-entropy."""

    def loss_fn(params, batch, rng):
        del rng
        loss, m = chunked_cross_entropy(
            params,
            cfg,
            batch["tokens"],
            batch["positions"],
            batch["segment_ids"],
            batch["targets"],
            batch["loss_mask"],
            chunk,
            mesh=mesh,
        )
        return loss, {"num_loss_tokens": m["num_tokens"]}

    return loss_fn


def make_eval_fn(rows: PackedRows, cfg: Qwen3Config, batch_size: int, chunk: int | None, mesh=None):
    """eval_fn(trainer) -> {"loss": token-mean CE over all rows} (last batch padded, masked)."""

    @jax.jit
    def sums(params, batch):
        _, m = chunked_cross_entropy(
            params,
            cfg,
            batch["tokens"],
            batch["positions"],
            batch["segment_ids"],
            batch["targets"],
            batch["loss_mask"],
            chunk,
            mesh=mesh,
        )
        return m["loss_sum"], m["num_tokens"]

    def eval_fn(trainer) -> dict[str, float]:
        total, count = 0.0, 0.0
        for start in range(0, len(rows), batch_size):
            idx = np.arange(start, start + batch_size) % len(rows)
            batch = rows.rows(idx)
            valid = (np.arange(start, start + batch_size) < len(rows)).astype(np.float32)
            batch["loss_mask"] = batch["loss_mask"] * valid[:, None]
            ls, n = sums(trainer.params, batch)
            total += float(ls)
            count += float(n)
        return {"loss": total / max(count, 1.0), "tokens": count}

    return eval_fn


# ----------------------------------------------------------------------------- entry point
def num_trainable(cfg: Qwen3Config, config: RunConfig) -> int:
    """Parameters the run trains: all, or the LoRA adapters'."""
    if not config.lora.enabled:
        return cfg.num_params()
    from jaxrepair.model.lora import num_adapter_params

    return num_adapter_params(cfg, config.lora)


def run_sft(
    config: RunConfig,
    *,
    tokenizer: str | Tokenizer | None = None,
    mesh: Mesh | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    existing: str = "check",
) -> dict[str, Any]:
    """`jaxrepair sft CONFIG.toml`: SFT from trajectory JSONL with resume; returns a summary.

    Resumes from `train.out_dir/checkpoints` when `train.resume` and a good checkpoint exists;
    otherwise starts from `train.init_from` / `model.hf_dir` (HF or orbax) or a random init of
    `model.preset` (see `run_setup`). `tokenizer` (a spec or a loaded Tokenizer) overrides the
    config's tokenizer, `mesh` the mesh built from `[mesh]`; `stop_after` stops after that many
    steps in this call (a checkpoint is saved). An out_dir holding a run with other settings is
    refused, or handled as `existing` says (see `jaxrepair.train.rundir`).
    """
    from jaxrepair.train.run_setup import start_training
    from jaxrepair.train.rundir import finish_run
    from jaxrepair.train.trainer import lora_run

    t_start = time.perf_counter()
    if not config.data.train_paths:
        raise ValueError("data.train_paths is empty: give trajectory JSONL files to train on")
    setup = start_training(config, "sft", existing, tokenizer=tokenizer, mesh=mesh)
    config, tok, mesh, out_dir = setup.config, setup.tokenizer, setup.mesh, setup.run.path
    d, tr = config.data, config.train
    thinking = config.sft.thinking
    rows = pack_documents(
        encode_trajectories(
            load_trajectories(d.train_paths),
            tok,
            thinking,
            prompt_weight=config.sft.prompt_loss_weight,
        ),
        d.seq_len,
        tok.pad_id,
        d.packing,
    )
    log.info("packed training data: %s", rows.stats)
    eval_rows = None
    if d.eval_paths:
        eval_rows = pack_documents(
            encode_trajectories(load_trajectories(d.eval_paths), tok, thinking),
            d.seq_len,
            tok.pad_id,
            d.packing,
        )
    cfg, chunk = setup.source.cfg, min(DEFAULT_CHUNK, d.seq_len)
    trainer = setup.trainer(sft_loss_fn(cfg, chunk, mesh), tr.steps, progress)
    lora = lora_run(setup)
    if lora is not None:
        trainer.use_lora(lora)
    loader = PackedLoader(rows, d.batch_size, seed=tr.seed, shuffle=d.shuffle)
    resumed = setup.restore_or_init(trainer, loader, lambda: trainer.step, "step")
    eval_fn = None
    if eval_rows is not None:
        eval_fn = make_eval_fn(eval_rows, cfg, d.batch_size, chunk, mesh)
    try:
        summary = trainer.fit(loader, tr.steps, eval_fn, tr.eval_every, stop_after=stop_after)
    finally:
        trainer.close()
    summary.update(
        resumed=resumed,
        data=rows.stats,
        params=cfg.num_params(),
        trainable_params=num_trainable(cfg, config),
        wall_s=time.perf_counter() - t_start,
        checkpoint_dir=str(out_dir / "checkpoints"),
        run_dir_state=setup.run.state,
    )
    finish_run(setup.run, summary)
    return summary

"""Our rollout engine in JAX: own weights and mesh, paged KV cache, continuous batching.

- Weights: a copy of the learner's parameters in the compute dtype, placed tensor-parallel on
  the engine's mesh (heads and MLP split over `tensor`, embedding replicated), so the decode
  loop never gathers a weight matrix; `update_weights` reshards the learner's tree into it
  and reports the seconds it took. Several data-parallel replicas are several engines.
- Continuous batching: `slots` sequences decode together in chunks of `decode_chunk` steps;
  between chunks finished sequences leave and waiting requests join, so no batch waits for
  its longest row.
- KV reuse: the cache is paged (`blocks.BlockPool`): a new request shares every cached block
  of its prefix and copies a partially matching one, so a multi-turn episode's next turn and
  a group's other samples prefill only what is new. Prompts are padded to a whole block,
  never to a power of two.
- When the pool runs out mid-decode, the most recently admitted sequence is preempted: its
  blocks go back to the pool (still cached) and it rejoins the queue head with its tokens so
  far, to continue exactly where it was (its key index carries on). Nothing is dropped.

Sampling is `jaxrepair.model.sampler.sample_tokens`, so results equal `generate`'s for the
same keys (see `api` for the semantics).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrepair.config import EngineSection
from jaxrepair.engine.api import Completion, Event, Request
from jaxrepair.engine.blocks import ROOT, BlockPool, OutOfBlocks
from jaxrepair.engine.paged_model import (
    RaggedBlocks,
    compile_programs,
    hoists_context,
    init_pool,
)
from jaxrepair.engine.reshard import reshard_to_engine
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.qwen3 import Params, unstack_layers
from jaxrepair.model.sampler import Buckets
from jaxrepair.model.sharding import check_mesh_fits, param_shardings

_STOP_BUCKETS = (4, 16, 64)
# A prefill's block table is padded to a power of two of blocks, at least this many (128 tokens
# at block size 16), a decode call's list of blocks (`_ragged_lists`) to at least this many
# per row, and a decode call takes the running sequences padded to a power of two of rows, at
# least this many: a few padded rows or blocks cost less than compiling a program per size,
# and many cost more (every decode step multiplies all of them).
_MIN_TABLE_BLOCKS = 8
_MIN_DECODE_ROWS = 8
_FINISHING_ROWS = 8


@dataclasses.dataclass(frozen=True)
class EngineConfig(EngineSection):
    """What an engine runs with: the run config's `[engine]` section (sizes, dtype, their
    defaults and checks are defined once, in `jaxrepair.config.EngineSection`) and the longest
    sequence a request may reach. `num_blocks * block_size` tokens of KV fit in the pool;
    `enabled` and `tensor` are the run's choices that `engine_from_config` acts on."""

    max_seq_len: int = 32768

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_seq_len < 1:
            raise ValueError(f"engine max_seq_len must be >= 1, got {self.max_seq_len}")

    @classmethod
    def from_section(cls, section: EngineSection, max_seq_len: int) -> EngineConfig:
        fields = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
        return cls(**fields, max_seq_len=max_seq_len)

    def compute_dtype(self) -> jnp.dtype:
        if self.dtype == "auto":
            return jnp.dtype(jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)
        return jnp.dtype(self.dtype)


@dataclasses.dataclass
class EngineStats:
    """Counters since the engine started (the benchmark and the trainer's metrics read them)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV was reused, not computed
    prefilled_tokens: int = 0  # tokens whose KV a prefill computed
    generated_tokens: int = 0
    decode_calls: int = 0
    prefill_calls: int = 0
    decode_steps: int = 0
    slot_steps: int = 0  # sum over decode steps of busy slots
    preemptions: int = 0
    weight_updates: int = 0
    reshard_seconds: float = 0.0

    slots: int = 1  # the engine's decode slots

    @property
    def occupancy(self) -> float:
        """Busy fraction of the decode slots over all decode steps."""
        return self.slot_steps / max(self.decode_steps * self.slots, 1)


@dataclasses.dataclass
class _Seq:
    rid: int
    request: Request
    key: np.ndarray  # uint32[2]
    tokens: list[int]  # prompt + generated; KV exists for all but the last
    blocks: list[int] = dataclasses.field(default_factory=list)
    registered: int = 0  # leading full blocks registered in the pool
    generated: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    versions: list[int] = dataclasses.field(default_factory=list)
    cached: int = -1  # prompt tokens reused at first admission (-1: not admitted yet)
    slot: int = -1

    @property
    def computed(self) -> int:
        return len(self.tokens) - 1


def _key_data(seed: int | tuple[int, int]) -> np.ndarray:
    if isinstance(seed, tuple):
        return np.asarray(seed, np.uint32)
    return np.asarray(jax.random.key_data(jax.random.key(int(seed))), np.uint32)


def row_seed(rng: int | jax.Array, row: int) -> tuple[int, int]:
    """The seed of request `row` that reproduces row `row` of `generate(..., rng=rng)`."""
    key = jax.random.key(rng) if isinstance(rng, int) else rng
    data = np.asarray(jax.random.key_data(jax.random.fold_in(key, row)), np.uint32)
    return int(data[0]), int(data[1])


def engine_from_config(
    section: EngineSection, params: Params, cfg: Qwen3Config, max_seq_len: int, version: int = 0
) -> JaxEngine | None:
    """The run's engine (None when `engine.enabled` is off), on `engine.tensor` of this
    process's devices."""
    if not section.enabled:
        return None
    devices = jax.local_devices()
    if section.tensor > len(devices):
        raise ValueError(
            f"engine.tensor={section.tensor} but this process has {len(devices)} devices"
        )
    mesh = None
    if section.tensor > 1:
        from jaxrepair.model.sharding import make_mesh

        mesh = make_mesh({"tensor": section.tensor}, devices=devices[: section.tensor])
    config = EngineConfig.from_section(section, max_seq_len)
    return JaxEngine(params, cfg, config, mesh=mesh, version=version)


def engine_shardings(params: Params, mesh: Mesh) -> Params:
    """Tensor-parallel placement: the model's sharding rules, embedding table replicated
    (a token lookup in a vocab-sharded table would gather it), nothing split over fsdp/data."""
    if mesh.shape.get("fsdp", 1) != 1 or mesh.shape.get("data", 1) != 1:
        raise ValueError(
            f"an engine mesh splits only over 'tensor' (got {dict(mesh.shape)}); run one engine "
            "per data-parallel replica"
        )
    shardings = param_shardings(params, mesh)
    shardings["embed"] = NamedSharding(mesh, PartitionSpec())
    return shardings


class JaxEngine:
    """The `RolloutEngine` for Qwen3 in JAX (see the module docstring)."""

    def __init__(
        self,
        params: Params,
        cfg: Qwen3Config,
        config: EngineConfig | None = None,
        *,
        mesh: Mesh | None = None,
        version: int = 0,
    ) -> None:
        self.cfg = cfg
        self.config = config or EngineConfig()
        self.mesh = mesh
        self.dtype = self.config.compute_dtype()
        if mesh is not None:
            check_mesh_fits(cfg, mesh)
        self.blocks = BlockPool(self.config.num_blocks, self.config.block_size)
        self.max_blocks = math.ceil(self.config.max_seq_len / self.config.block_size)
        self.stats = EngineStats(slots=self.config.slots)
        self._prefill, self._decode, self._copy = compile_programs(cfg, mesh)
        self._hoists_context = hoists_context(mesh)
        self.pool = self._place_pool(
            init_pool(cfg, self.config.num_blocks, self.config.block_size, self.dtype)
        )
        self._scratch: dict[int, list[tuple[jax.Array, jax.Array]]] = {}
        self._waiting: collections.deque[_Seq] = collections.deque()
        self._running: dict[int, _Seq] = {}  # slot -> sequence
        self._next_id = 0
        self.params: Params = {}
        self.version = version
        self.update_weights(params, version)

    # ------------------------------------------------------------------------- weights
    def _place_pool(self, pool):
        if self.mesh is None:  # committed, like the pools the programs return: one cache key
            return jax.device_put(pool, jax.local_devices()[0])
        spec = PartitionSpec(None, None, self._kv_split())  # [L, blocks, K, ...]
        return jax.device_put(pool, NamedSharding(self.mesh, spec))

    def _kv_split(self) -> str | None:
        """The mesh axis KV is split over on its KV-heads axis (pool and decode scratch):
        `tensor` when the heads divide evenly, else replicated."""
        tensor = self.mesh.shape.get("tensor", 1) if self.mesh is not None else 1
        return "tensor" if self.cfg.num_key_value_heads % tensor == 0 else None

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def update_weights(self, params: Params, version: int) -> float:
        """Reshard the learner's params into the engine's dtype and mesh; seconds taken.

        Sequences in flight continue under the new weights from their next token (partial
        rollouts): their KV is recomputed with the new weights at their next admission, so
        every token is sampled by exactly one policy given its whole context, the quantity
        the learner's importance ratio needs; each token records its version. Cached
        prefixes are dropped, since their KV came from the old weights.
        """
        start = time.perf_counter()
        mesh = self.mesh or Mesh(np.asarray(jax.local_devices()[:1]), ("tensor",))
        placed = reshard_to_engine(dict(params), engine_shardings(dict(params), mesh), self.dtype)
        placed["layers"] = unstack_layers(placed["layers"])
        jax.block_until_ready(placed)
        self.params = placed
        self.version = int(version)
        for seq in sorted(self._running.values(), key=lambda q: -q.rid):
            self._requeue(seq, keep_cache=False)
        self.blocks.clear_cache()
        seconds = time.perf_counter() - start
        self.stats.weight_updates += 1
        self.stats.reshard_seconds += seconds
        return seconds

    # ------------------------------------------------------------------------ requests
    def add(self, request: Request) -> int:
        prompt, sampling = request.prompt, request.sampling
        if min(prompt) < 0 or max(prompt) >= self.cfg.vocab_size:
            raise ValueError(f"prompt token ids must be in [0, {self.cfg.vocab_size})")
        if any(not 0 <= t < self.cfg.vocab_size for t in sampling.stop_tokens):
            raise ValueError(f"stop tokens must be in [0, {self.cfg.vocab_size})")
        if len(sampling.stop_tokens) > _STOP_BUCKETS[-1]:
            raise ValueError(f"at most {_STOP_BUCKETS[-1]} stop tokens per request")
        total = len(prompt) + sampling.max_new_tokens
        if total > self.config.max_seq_len:
            raise ValueError(
                f"prompt ({len(prompt)}) + max_new_tokens ({sampling.max_new_tokens}) exceeds "
                f"the engine's max_seq_len {self.config.max_seq_len}"
            )
        need = math.ceil(total / self.config.block_size)
        if need > self.config.num_blocks - 1:
            raise ValueError(
                f"a request of {total} tokens needs {need} KV blocks; the pool has "
                f"{self.config.num_blocks - 1} (raise engine.num_blocks)"
            )
        rid = self._next_id
        self._next_id += 1
        self._waiting.append(_Seq(rid, request, _key_data(request.seed), list(prompt)))
        return rid

    @property
    def max_seq_len(self) -> int:
        return self.config.max_seq_len

    def cancel(self, request_id: int) -> bool:
        for seq in self._waiting:
            if seq.rid == request_id:
                self._waiting.remove(seq)
                return True
        for seq in self._running.values():
            if seq.rid == request_id:
                self._release(seq, keep_cache=True)
                return True
        return False

    def has_work(self) -> bool:
        return bool(self._waiting or self._running)

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        ids = [self.add(r) for r in requests]
        done: dict[int, Completion] = {}
        while self.has_work():
            for ev in self.step():
                if ev.done is not None:
                    done[ev.request_id] = ev.done
        return [done[i] for i in ids]

    # ---------------------------------------------------------------------- scheduling
    def step(self) -> list[Event]:
        self._admit()
        if not self._running:
            return []
        self._reserve_decode_blocks()
        return self._decode_chunk()

    def _free_slots(self) -> list[int]:
        return [s for s in range(self.config.slots) if s not in self._running]

    def _admit(self) -> None:
        """Admit waiting sequences into free slots; their prefills run batched (`_Prefills`)."""
        free = self._free_slots()
        batch = _Prefills()
        while free and self._waiting:
            seq = self._waiting[0]
            try:
                span = self._place(seq, batch)
            except OutOfBlocks:
                if not self._running:
                    self._run_prefills(batch)
                    raise
                break  # wait for running sequences to finish
            self._waiting.popleft()
            seq.slot = free.pop(0)
            self._running[seq.slot] = seq
            batch.add(seq, *span)
        self._run_prefills(batch)

    def _place(self, seq: _Seq, batch: _Prefills) -> tuple[int, int]:
        """Give seq blocks for every token but its last, reusing the cache; the token range
        [start, stop) whose KV a prefill must compute. Runs the prefills batched so far
        first when seq would read a block they are about to write."""
        bs = self.config.block_size
        context = seq.tokens[:-1]
        match = self.blocks.match(context)
        needed = math.ceil(len(context) / bs) if context else 0
        extra = needed - len(match.shared)
        source = [] if match.copy_from is None else [match.copy_from]
        if batch.writes(match.shared) or batch.writes(source):
            self._run_prefills(batch)
        self.blocks.retain([*match.shared, *source])  # nothing we read may be evicted
        try:
            fresh = self.blocks.allocate(extra) if extra > 0 else []
        except OutOfBlocks:
            self.blocks.release([*match.shared, *source])
            raise
        seq.blocks = list(match.shared) + fresh
        seq.registered = len(match.shared)
        reused = len(match.shared) * bs
        if match.copy_from is not None and fresh:
            self.pool = self._copy(
                self.pool, np.asarray([match.copy_from], np.int32), np.asarray([fresh[0]], np.int32)
            )
            reused += match.copy_tokens
        self.blocks.release(source)
        if seq.cached < 0:  # first admission (a preempted sequence re-enters with its tokens)
            seq.cached = min(reused, len(seq.request.prompt))
            self.stats.prompt_tokens += len(seq.request.prompt)
            self.stats.cached_tokens += seq.cached
        # registered now, computed by the batch before anything reads it (see `_Prefills`)
        self._register(seq, partial_tail=True)
        return reused, len(context)

    def _run_prefills(self, batch: _Prefills) -> None:
        """Compute the batch's KV in rounds of up to `prefill_chunk` tokens per row, packing
        rows into calls of at most `prefill_chunk` (padded) tokens: the memory of one chunk,
        and one pass over the weights for many short prefills (the next turns of episodes)."""
        bs, chunk = self.config.block_size, self.config.prefill_chunk
        work = batch.take()
        while work:
            rounds = [(seq, start, min(chunk, stop - start)) for seq, start, stop in work]
            for rows in _pack_prefills(rounds, bs, chunk):
                self._prefill_call(rows)
            work = [(q, start + chunk, stop) for q, start, stop in work if start + chunk < stop]

    def _prefill_call(self, rows: list[tuple[_Seq, int, int]]) -> None:
        bs = self.config.block_size
        t = max(math.ceil(n / bs) for _, _, n in rows) * bs  # padding: within the longest row
        b = _pow2_at_least(len(rows))
        width = Buckets.pick(
            _pow2(self.max_blocks, _MIN_TABLE_BLOCKS),
            max(math.ceil((start + n) / bs) for _, start, n in rows),
        )
        tokens = np.zeros((b, t), np.int32)
        starts = np.zeros(b, np.int32)
        counts = np.zeros(b, np.int32)  # padding rows: no valid token, writes go to block 0
        table = np.zeros((b, width), np.int32)
        for r, (seq, start, n) in enumerate(rows):
            tokens[r, :n] = seq.tokens[start : start + n]
            starts[r], counts[r] = start, n
            table[r, : min(len(seq.blocks), width)] = seq.blocks[:width]
            self.stats.prefilled_tokens += n
        self.pool = self._prefill(self.params, self.pool, tokens, starts, counts, table)
        self.stats.prefill_calls += 1

    def _register(self, seq: _Seq, *, partial_tail: bool) -> None:
        """Register seq's newly full blocks (and, when asked, its partial tail) for reuse."""
        bs = self.config.block_size
        computed = seq.computed
        while seq.registered < computed // bs:
            i = seq.registered
            parent = seq.blocks[i - 1] if i else ROOT
            own = seq.blocks[i]
            kept = self.blocks.register(parent, own, seq.tokens[i * bs : (i + 1) * bs])
            if kept != own:  # an identical block is cached: share it, free ours
                self.blocks.retain([kept])
                self.blocks.release([own])
                seq.blocks[i] = kept
            seq.registered += 1
        tail = computed % bs
        if partial_tail and tail and seq.registered < len(seq.blocks):
            i = seq.registered
            parent = seq.blocks[i - 1] if i else ROOT
            self.blocks.register(parent, seq.blocks[i], seq.tokens[i * bs : i * bs + tail])

    def _reserve_decode_blocks(self) -> None:
        """Blocks for the next chunk of every running sequence, preempting if the pool is full."""
        bs, chunk = self.config.block_size, self.config.decode_chunk
        for slot in sorted(self._running, key=lambda s: self._running[s].rid):
            seq = self._running.get(slot)
            if seq is None:
                continue
            left = seq.request.sampling.max_new_tokens - len(seq.generated)
            need = math.ceil((seq.computed + min(chunk, left)) / bs) - len(seq.blocks)
            while need > 0:
                try:
                    seq.blocks += self.blocks.allocate(need)
                    need = 0
                except OutOfBlocks:
                    victim = max(self._running.values(), key=lambda s: s.rid)
                    if victim is seq and len(self._running) == 1:
                        raise
                    self._preempt(victim)
                    if victim is seq:
                        break

    def _preempt(self, seq: _Seq) -> None:
        self._requeue(seq, keep_cache=True)
        self.stats.preemptions += 1

    def _requeue(self, seq: _Seq, *, keep_cache: bool) -> None:
        """Back to the queue head with its tokens so far."""
        self._release(seq, keep_cache=keep_cache)
        self._waiting.appendleft(seq)

    def _release(self, seq: _Seq, *, keep_cache: bool) -> None:
        """Take seq out of its slot; its blocks return to the pool (registered for reuse
        when `keep_cache`)."""
        if keep_cache:
            self._register(seq, partial_tail=True)
        self.blocks.release(seq.blocks)
        seq.blocks, seq.registered = [], 0
        del self._running[seq.slot]
        seq.slot = -1

    def _decode_chunk(self) -> list[Event]:
        chunk, bs = self.config.decode_chunk, self.config.block_size
        # the running sequences in admission order, one row each (a row's result does not
        # depend on the other rows, so rows may change between calls)
        seqs = sorted(self._running.values(), key=lambda q: q.rid)
        rows = Buckets.pick(_pow2(self.config.slots, _MIN_DECODE_ROWS), len(seqs))
        n_stop = Buckets.pick(
            _STOP_BUCKETS,
            max(max(len(q.request.sampling.stop_tokens) for q in seqs), 1),
        )
        args = _DecodeArgs.empty(rows, _write_width(chunk, bs), n_stop)
        table, base, length, last = args.table, args.base, args.length, args.last
        active = args.active
        produced, budget, keys, stops = args.produced, args.budget, args.keys, args.stops
        temperature, top_k, top_p = args.temperature, args.top_k, args.top_p
        width = table.shape[1]
        for s, q in enumerate(seqs):
            sp = q.request.sampling
            base[s] = q.computed // bs
            writes = q.blocks[base[s] : base[s] + width]
            table[s, : len(writes)] = writes
            length[s], last[s], active[s] = q.computed, q.tokens[-1], True
            produced[s], budget[s], keys[s] = len(q.generated), sp.max_new_tokens, q.key
            temperature[s], top_k[s], top_p[s] = sp.temperature, sp.top_k, sp.top_p
            stops[s, : len(sp.stop_tokens)] = sp.stop_tokens
        lists = _ragged_lists(
            [q.blocks for q in seqs],
            rows,
            _list_buckets(rows * self.max_blocks, rows * _MIN_TABLE_BLOCKS),
            bs,
        )
        # end the call when one in `_FINISHING_ROWS` rows (at least one) reaches its token
        # budget, so finished slots (and the next turns of their episodes) do not wait out the
        # chunk, while a call is not cut to a step or two by each row that finishes: a call
        # costs about half a decode step of its own (gathers, scatter, host round trip)
        left = sorted(q.request.sampling.max_new_tokens - len(q.generated) for q in seqs)
        steps = min(chunk, left[(len(left) - 1) // _FINISHING_ROWS])
        sampled = [q.request.sampling for q in seqs if not q.request.sampling.greedy]
        greedy = not sampled
        truncate = any(sp.top_k > 0 or sp.top_p < 1 for sp in sampled)
        scratch = self._scratch.pop(lists.blocks.shape[0], None)
        if scratch is None:
            scratch = self._new_scratch(lists.blocks.shape[0])
        self.pool, out_tok, out_lp, n_out, still, scratch = self._decode(
            greedy,
            truncate,
            self.params,
            self.pool,
            table,
            base,
            lists,
            *args.arrays()[2:],
            np.int32(steps),
            chunk,
            scratch,
        )
        self._scratch[lists.blocks.shape[0]] = scratch
        while len(self._scratch) > 2:
            self._scratch.pop(next(iter(self._scratch)))
        out_tok, out_lp, n_out, still = jax.device_get((out_tok, out_lp, n_out, still))
        self.stats.decode_calls += 1
        steps = int(n_out.max())
        self.stats.decode_steps += steps
        self.stats.slot_steps += int(n_out.sum())
        events = []
        for s, q in enumerate(seqs):
            n = int(n_out[s])
            toks = out_tok[s, :n].tolist()
            lps = out_lp[s, :n].tolist()
            q.tokens += toks
            q.generated += toks
            q.logprobs += lps
            q.versions += [self.version] * n
            self.stats.generated_tokens += n
            done = None
            if not still[s]:
                done = self._finish(q)
            else:
                self._register(q, partial_tail=False)
            events.append(Event(q.rid, tuple(toks), tuple(lps), done))
        return events

    def decode_hlo(self, *, greedy: bool = True) -> str:
        """The compiled decode program's HLO text (tests check what it communicates)."""
        chunk, bs = self.config.decode_chunk, self.config.block_size
        rows = _pow2(self.config.slots, _MIN_DECODE_ROWS)[0]
        args = _DecodeArgs.empty(rows, _write_width(chunk, bs), _STOP_BUCKETS[0])
        lists = _ragged_lists([[]], rows, (rows * _MIN_TABLE_BLOCKS,), bs)
        lowered = self._decode.lower(
            greedy,
            False,
            self.params,
            self.pool,
            args.table,
            args.base,
            lists,
            *args.arrays()[2:],
            np.int32(chunk),
            chunk,
            self._new_scratch(lists.blocks.shape[0]),
        )
        return lowered.compile().as_text()

    def _new_scratch(self, blocks: int) -> list[tuple[jax.Array, jax.Array]]:
        """Per layer, buffers for `blocks` gathered context blocks (a decode call's `scratch`),
        placed like the pool (split over KV heads on a tensor mesh); none where decode
        gathers per step (`paged_model.hoists_context`)."""
        if not self._hoists_context:
            return []
        k, v = self.pool["k"], self.pool["v"]
        if self.mesh is None:
            place = k.sharding
        else:  # [blocks, K, ...]
            place = NamedSharding(self.mesh, PartitionSpec(None, self._kv_split()))
        return [
            (
                jnp.zeros((blocks, *k.shape[2:]), k.dtype, device=place),
                jnp.zeros((blocks, *v.shape[2:]), v.dtype, device=place),
            )
            for _ in range(k.shape[0])
        ]

    def _finish(self, seq: _Seq) -> Completion:
        sp = seq.request.sampling
        stopped = bool(seq.generated) and seq.generated[-1] in sp.stop_tokens
        self._release(seq, keep_cache=True)
        return Completion(
            request_id=seq.rid,
            tokens=tuple(seq.generated),
            logprobs=tuple(seq.logprobs),
            finish_reason="stop" if stopped else "length",
            prompt_tokens=len(seq.request.prompt),
            cached_prompt_tokens=seq.cached,
            versions=tuple(seq.versions),
        )


@dataclasses.dataclass
class _DecodeArgs:
    """Host arrays of one decode call, one row per running sequence (padding rows inactive)."""

    table: np.ndarray  # the blocks a call may write, from block index `base` of each row
    base: np.ndarray
    length: np.ndarray
    last: np.ndarray
    active: np.ndarray
    produced: np.ndarray
    budget: np.ndarray
    keys: np.ndarray
    temperature: np.ndarray
    top_k: np.ndarray
    top_p: np.ndarray
    stops: np.ndarray

    @classmethod
    def empty(cls, slots: int, width: int, n_stop: int) -> _DecodeArgs:
        return cls(
            table=np.zeros((slots, width), np.int32),
            base=np.zeros(slots, np.int32),
            length=np.zeros(slots, np.int32),
            last=np.zeros(slots, np.int32),
            active=np.zeros(slots, bool),
            produced=np.zeros(slots, np.int32),
            budget=np.ones(slots, np.int32),
            keys=np.zeros((slots, 2), np.uint32),
            temperature=np.zeros(slots, np.float32),
            top_k=np.zeros(slots, np.int32),
            top_p=np.ones(slots, np.float32),
            stops=np.full((slots, n_stop), -1, np.int32),
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


class _Prefills:
    """Prefills of sequences admitted together, run as batched calls (`_run_prefills`).

    A sequence's blocks are registered in the pool when it is placed, before its KV exists;
    a later sequence of the same admission that would read one of those blocks (a shared
    prefix, or the source of a copy-on-write) runs the batch first, so nothing is ever read
    before it is written.
    """

    def __init__(self) -> None:
        self._work: list[tuple[_Seq, int, int]] = []
        self._blocks: set[int] = set()

    def add(self, seq: _Seq, start: int, stop: int) -> None:
        if start < stop:
            self._work.append((seq, start, stop))
            self._blocks.update(seq.blocks)

    def writes(self, blocks: Sequence[int]) -> bool:
        return any(b in self._blocks for b in blocks)

    def take(self) -> list[tuple[_Seq, int, int]]:
        work, self._work, self._blocks = self._work, [], set()
        return work


def _pow2_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _pack_prefills(
    rows: list[tuple[_Seq, int, int]], block_size: int, budget: int
) -> list[list[tuple[_Seq, int, int]]]:
    """Rows (seq, start, n) packed in order into calls whose padded size (rows rounded up to
    a power of two, times the longest row in whole blocks) stays within `budget` tokens; a
    row alone always fits (n <= budget)."""
    calls: list[list[tuple[_Seq, int, int]]] = []
    longest = 0
    for row in rows:
        t = math.ceil(row[2] / block_size) * block_size
        if calls and _pow2_at_least(len(calls[-1]) + 1) * max(longest, t) <= budget:
            calls[-1].append(row)
            longest = max(longest, t)
        else:
            calls.append([row])
            longest = t
    return calls


def _pow2(limit: int, least: int) -> tuple[int, ...]:
    """Bucket sizes: powers of two from `least` up to the limit, and the limit itself."""
    out, n = [], min(least, limit)
    while n < limit:
        out.append(n)
        n *= 2
    out.append(limit)
    return tuple(sorted(set(out)))


def _write_width(chunk: int, block_size: int) -> int:
    """Blocks one row can write in a decode call of `chunk` steps, from wherever it starts."""
    return -(-chunk // block_size) + 1


def _list_buckets(limit: int, least: int) -> tuple[int, ...]:
    """Sizes of the ragged block list: powers of two and their halfway points (1.5x), at
    least `least`, up to `limit`: at most a third of a decode call's attention is padding,
    for about two compiled programs per doubling of the context the batch holds."""
    out, n = [], max(min(least, limit), 1)
    while n < limit:
        out += [n, n + n // 2] if n >= 2 else [n]
        n *= 2
    out.append(limit)
    return tuple(sorted({x for x in out if x <= limit}))


def _ragged_lists(
    tables: Sequence[Sequence[int]], rows: int, sizes: tuple[int, ...], block_size: int
) -> RaggedBlocks:
    """The rows' blocks one after another, padded to the smallest size in `sizes` that holds
    them (padding: block 0 of the last row at a position nobody reaches)."""
    n = sum(len(t) for t in tables)
    size = Buckets.pick(sizes, max(n, 1))
    blocks = np.zeros(size, np.int32)
    owner = np.full(size, rows - 1, np.int32)
    first = np.full(size, np.iinfo(np.int32).max - block_size, np.int32)
    at = 0
    for r, t in enumerate(tables):
        blocks[at : at + len(t)] = t
        owner[at : at + len(t)] = r
        first[at : at + len(t)] = np.arange(len(t), dtype=np.int32) * block_size
        at += len(t)
    return RaggedBlocks(blocks=blocks, rows=owner, first=first)

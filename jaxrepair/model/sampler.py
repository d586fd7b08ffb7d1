"""Batched generation with a preallocated KV cache: prefill + decode in one jitted program.

Why it is shaped this way:
- Ragged prompts are left-padded into a small set of shape *buckets* (batch size, prompt
  length, number of new tokens), so a new mix of lengths reuses a compiled program instead of
  recompiling. Everything that changes between calls without changing shapes (temperature,
  top-k, top-p, stop tokens, max_new_tokens, the key) is a traced argument.
- Prefill writes the whole prompt bucket at cache slot 0 (`prefill_cache`, layers scanned);
  decode step i writes slot P + i for every row (one common slot, `decode_step`, layers
  unrolled); `key_valid` hides each row's left padding and positions are `index - pad`, so
  each row sees exactly its own prompt, as if unpadded.
- The decode loop is a `jax.lax.while_loop`: no Python per token, and it ends as soon as every
  row has produced a stop token.
- Log-probs are those of the sampled token under softmax(logits / temperature) *before* top-k /
  top-p truncation (temperature 0 counts as 1): the quantity the trainer recomputes, so GRPO
  importance ratios start at exactly 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxrepair.engine.api import Sampling
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.qwen3 import (
    Params,
    decode_step,
    init_cache,
    prefill_cache,
    unstack_layers,
)
from jaxrepair.model.sharding import (
    check_mesh_fits,
    gather_to_host,
    logical_to_spec,
    param_shardings,
    runs_on_cpu,
)

_CACHE_AXES = {
    "k": ("batch", "kv_heads", "head_dim", "cache_length"),
    "v": ("batch", "kv_heads", "cache_length", "head_dim"),
}


def _powers_of_two(lo: int, hi: int) -> tuple[int, ...]:
    out, n = [], lo
    while n <= hi:
        out.append(n)
        n *= 2
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Allowed padded sizes; a request is rounded up to the smallest bucket that holds it.

    Sizes above the largest bucket are rounded up to a multiple of the largest one (so very
    long prompts still work, at the price of a compile per new multiple).
    """

    batch: tuple[int, ...] = _powers_of_two(1, 1024)
    prompt: tuple[int, ...] = _powers_of_two(16, 1 << 17)
    new_tokens: tuple[int, ...] = _powers_of_two(16, 1 << 16)
    stop_tokens: tuple[int, ...] = (4, 16, 64)

    def __post_init__(self) -> None:
        for name in ("batch", "prompt", "new_tokens", "stop_tokens"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v <= 0 for v in values):
                raise ValueError(f"Buckets.{name} must be non-empty positive ints, got {values!r}")
            if tuple(sorted(values)) != tuple(values):
                raise ValueError(f"Buckets.{name} must be sorted ascending, got {values!r}")

    @staticmethod
    def pick(sizes: tuple[int, ...], n: int, multiple_of: int = 1) -> int:
        """Smallest bucket >= n, rounded up to a multiple of `multiple_of` (mesh batch split)."""
        size = next((s for s in sizes if s >= n), None)
        if size is None:
            size = -(-n // sizes[-1]) * sizes[-1]
        return -(-size // multiple_of) * multiple_of


DEFAULT_BUCKETS = Buckets()


@dataclasses.dataclass(frozen=True)
class GenerationOutput:
    """tokens/logprobs [B, max_new_tokens]; entries after a row's stop token are pad_id / 0."""

    tokens: np.ndarray  # int32
    logprobs: np.ndarray  # float32
    lengths: np.ndarray  # int32 [B], stop token included
    steps: int = 0  # tokens per row actually decoded (< max_new_tokens when all rows stopped)

    def completions(self) -> list[list[int]]:
        """Each row's completion as a list, cut at its length (stop token kept)."""
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths, strict=True)]


# ------------------------------------------------------------------------- compilation counter
_TRACES = {"count": 0}


def compile_count() -> int:
    """How many times a generation program has been traced (and so compiled) in this process.

    A second call whose shapes fall into already used buckets must leave this unchanged.
    """
    return _TRACES["count"]


# ------------------------------------------------------------------------------------ sampling
# Top-k / top-p look at the largest logits first: `lax.top_k` prefixes of these sizes, then a
# full sort only when some row's filter reaches past the largest prefix. A sort of every row
# over the vocabulary per token is the slow part on CPU (about 30 ms per 1k-row-entries x 1k
# of vocabulary: seconds per step for 64 rows of Qwen3's 151k); a prefix is exact whenever the
# kept set lies inside it.
_TOP_PREFIXES = (256, 4096)


def _mask_from_sorted(
    scaled: jax.Array, head: jax.Array, k: jax.Array, top_p: jax.Array, lse: jax.Array
) -> jax.Array:
    """The top-k/top-p mask of `scaled` [B, V] from `head` [B, m], its m largest entries in
    descending order, when every row's kept set lies in the head (see `mask_top_k_top_p`).

    lse [B, 1]: logsumexp of each full row, the normaliser when top-k is off (k == V).
    """
    v, m = scaled.shape[-1], head.shape[-1]
    ranks = jnp.arange(m)[None, :]
    in_top_k = ranks < k
    head_k = jnp.where(in_top_k, head, -jnp.inf)
    norm = jnp.where(k >= v, lse, jax.nn.logsumexp(head_k, axis=-1, keepdims=True))
    probs = jnp.exp(head_k - norm)  # the top-k-restricted distribution, largest first
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each entry
    keep = in_top_k & ((before < top_p) | (ranks == 0))
    threshold = jnp.min(jnp.where(keep, head, jnp.inf), axis=-1, keepdims=True)
    threshold = jnp.where((k >= v) & (top_p >= 1), -jnp.inf, threshold)  # no filter at all
    return jnp.where(scaled >= threshold, scaled, -jnp.inf)


def mask_top_k_top_p(scaled: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Logits with everything outside top-k, then outside the top-p nucleus, set to -inf.

    top_k <= 0 and top_p >= 1 disable the respective filter (traced, so no recompiles); both
    may be scalars or per-row [B, 1] arrays. The nucleus is the smallest set of largest
    entries whose mass under the top-k-restricted softmax reaches top_p; entries tied with
    its smallest are kept too. Exact: the kept set is found in a `lax.top_k` prefix when it
    lies there, else from a full sort.
    """
    b, v = scaled.shape
    k = jnp.broadcast_to(jnp.where(top_k > 0, jnp.minimum(top_k, v), v), (b, 1))
    top_p = jnp.broadcast_to(jnp.asarray(top_p, jnp.float32), (b, 1))
    lse = jax.nn.logsumexp(scaled, axis=-1, keepdims=True)

    def full():
        return _mask_from_sorted(scaled, -jnp.sort(-scaled, axis=-1), k, top_p, lse)

    def from_prefix(i: int):
        sizes = [m for m in _TOP_PREFIXES if m < v]
        if i == len(sizes):
            return full()
        head = jax.lax.top_k(scaled, sizes[i])[0]
        # a row's kept set lies in the head when its top-k does, or (top-k off) when the
        # head's mass reaches top_p (or no filter applies)
        mass = jnp.sum(jnp.exp(head - lse), axis=-1, keepdims=True)
        fits = (k <= sizes[i]) | ((k >= v) & ((top_p >= 1) | (mass >= top_p)))
        return jax.lax.cond(
            jnp.all(fits),
            lambda: _mask_from_sorted(scaled, head, k, top_p, lse),
            lambda: from_prefix(i + 1),
        )

    return from_prefix(0)


# Inverse-CDF sampling in two levels: a chunk of this many vocabulary entries by its mass,
# then an entry within it. Two uniforms per row instead of Gumbel noise over the whole
# vocabulary (threefry bits for every entry cost more than the model's decode step on CPU).
_DRAW_CHUNK = 256


def draw_categorical(keys: jax.Array, logits: jax.Array) -> jax.Array:
    """One index per row [B] drawn with probability softmax(logits) (entries at -inf never).

    keys [B]: one key per row. Exact up to float32 resolution (2^-24 of the row's mass for
    the chunk, 2^-24 of the chunk's mass within it), finer than Gumbel-max with float32
    noise, which never reaches entries more than about 16 nats below the maximum.
    """
    b, v = logits.shape
    c = min(_DRAW_CHUNK, v)
    n = -(-v // c)
    peak = jnp.max(logits, axis=-1, keepdims=True)
    probs = jnp.exp(logits - peak)  # unnormalised, 0 at -inf, 1 at the maximum
    probs = jnp.pad(probs, ((0, 0), (0, n * c - v))).reshape(b, n, c)
    u = jax.vmap(lambda k: jax.random.uniform(k, (2,)))(keys)  # [B, 2] in [0, 1)

    def pick(weights: jax.Array, u: jax.Array) -> jax.Array:
        """Index i with cdf[i-1] <= u * total < cdf[i]; never a zero weight."""
        cdf = jnp.cumsum(weights, axis=-1)
        i = jnp.sum(cdf <= u[:, None] * cdf[:, -1:], axis=-1)
        last = weights.shape[-1] - 1 - jnp.argmax(weights[:, ::-1] > 0, axis=-1)
        return jnp.minimum(i, last)  # u * total rounded up to the total

    chunk = pick(jnp.sum(probs, axis=-1), u[:, 0])
    inside = jnp.take_along_axis(probs, chunk[:, None, None], axis=1)[:, 0]  # [B, c]
    return chunk * c + pick(inside, u[:, 1])


def row_keys(rng: jax.Array, rows: int) -> jax.Array:
    """The key of each batch row: fold_in(rng, row). Token t of a row is drawn with
    fold_in(row key, t), so a row's sample never depends on the other rows (the rollout
    engine draws request i of `row_keys(rng, n)` identically, whatever its batch)."""
    return jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(rows))


def sample_tokens(
    logits: jax.Array,
    keys: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    *,
    greedy: bool,
    truncate: bool,
) -> tuple[jax.Array, jax.Array]:
    """(token [B] int32, log-prob [B] float32 at the sampling temperature, untruncated).

    keys [B]: the key of each row for this token. temperature/top_k/top_p: scalars or [B];
    a row with temperature 0 takes the argmax. `greedy` (every row greedy) and `truncate`
    (some row uses top-k/top-p) are static so the common cases compile without the top-k
    search. Draws are `draw_categorical` (inverse CDF), not Gumbel noise per vocabulary entry.
    """
    logits = logits.astype(jnp.float32)
    temperature = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), logits.shape[:1])
    temp = jnp.where(temperature > 0, temperature, 1.0)[:, None]
    scaled = logits / temp
    logp = jax.nn.log_softmax(scaled, axis=-1)
    tok = jnp.argmax(logits, axis=-1)
    if not greedy:
        if truncate:
            k = jnp.broadcast_to(jnp.asarray(top_k), logits.shape[:1])[:, None]
            p = jnp.broadcast_to(jnp.asarray(top_p), logits.shape[:1])[:, None]
            masked = mask_top_k_top_p(scaled, k, p)
        else:
            masked = scaled
        drawn = draw_categorical(keys, masked)
        tok = jnp.where(temperature > 0, drawn, tok)
    tok = tok.astype(jnp.int32)
    return tok, jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]


# ------------------------------------------------------------------------------ the program
def _generate_program(
    cfg: Qwen3Config,
    mesh: Mesh | None,
    hoist_layers: bool,
    new_bucket: int,
    greedy: bool,
    truncate: bool,
    pad_id: int,
    params: Params,
    tokens: jax.Array,  # [B, P] left-padded
    pad: jax.Array,  # [B] number of padding slots on the left
    max_new: jax.Array,  # scalar int32 <= new_bucket
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    stop_ids: jax.Array,  # [NS] int32, -1 = unused
    rng: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    _TRACES["count"] += 1  # runs at trace time only
    b, p = tokens.shape
    s = p + new_bucket
    key_valid = jnp.arange(s)[None, :] >= pad[:, None]  # future slots are hidden causally
    if p > 1:  # every prompt token but the last, which the first decode step feeds
        positions = jnp.maximum(jnp.arange(p - 1)[None, :] - pad[:, None], 0)
        cache = prefill_cache(
            params, cfg, tokens[:, :-1], positions, key_valid[:, : p - 1], s, mesh=mesh
        )
    else:
        cache = init_cache(cfg, b, s, dtype=params["embed"].dtype)
    if mesh is not None:
        cache = [
            {
                name: jax.lax.with_sharding_constraint(
                    c, NamedSharding(mesh, logical_to_spec(_CACHE_AXES[name], mesh, c.shape))
                )
                for name, c in layer.items()
            }
            for layer in cache
        ]
    # each layer's weights, sliced out of the stack once per call on CPU (where a slice is a
    # copy, and one per decode step and layer cost a fifth of the decode time), per step on
    # accelerators, as the layer scan did, so no second copy of the weights is held there
    hoisted = unstack_layers(params["layers"]) if hoist_layers else None
    layers = lambda: hoisted if hoist_layers else unstack_layers(params["layers"])
    keys = row_keys(rng, b)
    sample = lambda lg, i: sample_tokens(
        lg,
        jax.vmap(lambda k: jax.random.fold_in(k, i))(keys),
        temperature,
        top_k,
        top_p,
        greedy=greedy,
        truncate=truncate,
    )

    def cond(state):
        i, _tok, _cache, _ot, _ol, done, _len = state
        return (i < max_new) & ~jnp.all(done)

    def body(state):
        # feed the previous token (the last prompt token when i = 0) at slot p-1+i, whose
        # position is the row's own index there, then sample completion token i from its logits
        i, prev, cache, out_tok, out_lp, done, lengths = state
        pos = (p - 1 - pad + i)[:, None]
        logits, cache = decode_step(
            layers(), params, cfg, prev[:, None], pos, cache, p - 1 + i, key_valid, mesh=mesh
        )
        tok, lp = sample(logits[:, 0], i)
        tok = jnp.where(done, pad_id, tok)
        lp = jnp.where(done, 0.0, lp)
        out_tok = jax.lax.dynamic_update_slice_in_dim(out_tok, tok[:, None], i, 1)
        out_lp = jax.lax.dynamic_update_slice_in_dim(out_lp, lp[:, None], i, 1)
        stopped = (~done) & jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
        lengths = jnp.where(stopped, i + 1, lengths)
        return i + 1, tok, cache, out_tok, out_lp, done | stopped, lengths

    state = (
        jnp.int32(0),
        tokens[:, -1],
        cache,
        jnp.full((b, new_bucket), pad_id, jnp.int32),
        jnp.zeros((b, new_bucket), jnp.float32),
        jnp.zeros((b,), bool),
        jnp.full((b,), max_new, jnp.int32),
    )
    steps, _, _, out_tok, out_lp, _, lengths = jax.lax.while_loop(cond, body, state)
    return out_tok, out_lp, lengths, steps


# XLA:CPU options for a float32 generate program on CPU: its decode steps are GEMVs (as many
# rows as the batch) that stream every weight once per step, and XLA:CPU's own dot kernels
# run them 1.3-1.5x faster than the YNNPACK fusions it picks by default (which stay for bf16,
# where they run the vocabulary-wide head 5x faster). See docs/decisions.md (sampler).
_CPU_FP32_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@lru_cache(maxsize=64)
def _compiled(
    cfg: Qwen3Config,
    mesh: Mesh | None,
    hoist_layers: bool,
    new_bucket: int,
    greedy: bool,
    truncate: bool,
    pad_id: int,
    cpu_fp32: bool = False,
):
    def fn(*args):
        return _generate_program(
            cfg, mesh, hoist_layers, new_bucket, greedy, truncate, pad_id, *args
        )

    return jax.jit(fn, compiler_options=_CPU_FP32_OPTIONS if cpu_fp32 else None)


# ------------------------------------------------------------------------------ public entry
def _check_prompts(prompts: Sequence[Sequence[int]], vocab: int) -> list[np.ndarray]:
    if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
        prompts = list(prompts)
    if not isinstance(prompts, Sequence | np.ndarray) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    out = []
    for i, prompt in enumerate(prompts):
        arr = np.asarray(prompt)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"prompt {i} must be a non-empty 1-D list of token ids")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"prompt {i} must hold integer token ids, got dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= vocab:
            raise ValueError(
                f"prompt {i} has token ids outside [0, {vocab}) (min {arr.min()}, max {arr.max()})"
            )
        out.append(arr.astype(np.int32))
    return out


def _as_key(rng: Any) -> jax.Array:
    if isinstance(rng, int | np.integer):
        return jax.random.key(int(rng))
    rng = jnp.asarray(rng)
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return rng
    if rng.dtype == jnp.uint32 and rng.shape == (2,):
        return jax.random.wrap_key_data(rng)
    raise ValueError(f"rng must be a jax.random.key, a raw uint32[2] key or an int, got {rng!r}")


def _batch_parallelism(mesh: Mesh | None) -> int:
    if mesh is None:
        return 1
    return math.prod(mesh.shape.get(a, 1) for a in ("data", "fsdp"))


def _place_params(params: Params, cfg: Qwen3Config, mesh: Mesh) -> Params:
    check_mesh_fits(cfg, mesh)
    shardings = param_shardings(params, mesh)
    return jax.tree.map(
        lambda x, s: x if getattr(x, "sharding", None) == s else jax.device_put(x, s),
        dict(params),
        shardings,
    )


def generate(
    params: Params,
    cfg: Qwen3Config,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop_tokens: Sequence[int] = (),
    rng: Any = None,
    mesh: Mesh | None = None,
    pad_id: int = 0,
    buckets: Buckets = DEFAULT_BUCKETS,
) -> GenerationOutput:
    """Sample completions for ragged prompts (list of token-id lists).

    temperature 0 = greedy (argmax). top_k <= 0 / top_p >= 1 switch those filters off. A row
    ends at its first token in `stop_tokens` (kept in the output and counted in `lengths`);
    later entries are `pad_id` with log-prob 0. `rng` (a jax key or an int seed) is required
    unless greedy. With `mesh`, params are placed by the sharding rules and the batch and the
    KV cache are split over the mesh (batch over data/fsdp, kv heads over tensor).
    """
    rows = _check_prompts(prompts, cfg.vocab_size)
    if isinstance(max_new_tokens, np.integer) or isinstance(top_k, np.integer):
        max_new_tokens, top_k = int(max_new_tokens), int(top_k)
    Sampling(max_new_tokens, temperature, top_p, top_k)  # the one check of the knobs
    if not 0 <= pad_id < cfg.vocab_size:
        raise ValueError(f"pad_id={pad_id} is outside the vocabulary [0, {cfg.vocab_size})")
    stops = [int(t) for t in stop_tokens]
    if any(not 0 <= t < cfg.vocab_size for t in stops):
        raise ValueError(f"stop_tokens {stops} contain ids outside [0, {cfg.vocab_size})")
    greedy = temperature == 0
    if rng is None:
        if not greedy:
            raise ValueError("sampling with temperature > 0 needs rng (a jax.random.key or int)")
        rng = 0
    key = _as_key(rng)
    truncate = (not greedy) and (top_k > 0 or top_p < 1)

    n = len(rows)
    b = Buckets.pick(buckets.batch, n, _batch_parallelism(mesh))
    p = Buckets.pick(buckets.prompt, max(len(r) for r in rows))
    nb = Buckets.pick(buckets.new_tokens, int(max_new_tokens))
    ns = Buckets.pick(buckets.stop_tokens, max(len(stops), 1))

    tokens = np.full((b, p), pad_id, np.int32)
    pad = np.full((b,), p - 1, np.int32)  # batch-padding rows: a one-token dummy prompt
    for i, row in enumerate(rows):
        tokens[i, p - len(row) :] = row
        pad[i] = p - len(row)
    stop_arr = np.full((ns,), -1, np.int32)
    stop_arr[: len(stops)] = stops

    args = [
        tokens,
        pad,
        np.int32(max_new_tokens),
        np.float32(temperature),
        np.int32(top_k),
        np.float32(top_p),
        stop_arr,
        key,
    ]
    if mesh is not None:
        params = _place_params(params, cfg, mesh)
        batch_sh = lambda a: NamedSharding(
            mesh, logical_to_spec(("batch",) + (None,) * (a.ndim - 1), mesh, a.shape)
        )
        args[0] = jax.device_put(tokens, batch_sh(tokens))
        args[1] = jax.device_put(pad, batch_sh(pad))
    on_cpu = runs_on_cpu(mesh)
    cpu_fp32 = on_cpu and params["embed"].dtype == jnp.float32
    fn = _compiled(cfg, mesh, on_cpu, nb, greedy, truncate, int(pad_id), cpu_fp32)
    out_tok, out_lp, lengths, steps = fn(params, *args)
    return GenerationOutput(
        tokens=gather_to_host(out_tok)[:n, :max_new_tokens].astype(np.int32),
        logprobs=gather_to_host(out_lp)[:n, :max_new_tokens].astype(np.float32),
        lengths=gather_to_host(lengths)[:n].astype(np.int32),
        steps=int(gather_to_host(steps)),
    )

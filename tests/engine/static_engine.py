"""Test support: a `RolloutEngine` over the static sampler, and a tiny Qwen3 that has learned
one tool-call conversation.

`StaticEngine` runs each request alone through `jaxrepair.model.sampler.generate` when it is
admitted (so its output is `generate`'s, the oracle), then hands the tokens out a few per
`step()`, interleaved with the other running requests: the event stream a continuously
batching engine produces. Sampled requests draw as `generate(..., rng=seed)` does.

`tool_model` sets the LM head of a tiny random Qwen3 so that it answers a repair conversation
with a `read_file` tool call (after a short <think> block), and the conversation with that
call's result with a short final answer: a real model whose greedy output is a tool call, so
a server's tool-call path is tested on generated text, not on text the test wrote.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.engine.api import Completion, Event, Request
from jaxrepair.engine.server import ServedModel
from jaxrepair.envs.chat import ToolCall, encode_prompt, format_tool_call
from jaxrepair.envs.tokenizer import Tokenizer
from jaxrepair.model import forward, param_shapes
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.qwen3 import Params
from jaxrepair.model.sampler import generate
from tests.train.trajectories import TOOLS, make_tokenizer


def sampler_output(params: Params, cfg: Qwen3Config, request: Request) -> tuple[list, list]:
    """(tokens, log-probs) of `generate` for one request: the oracle of `StaticEngine`."""
    s = request.sampling
    seed = request.seed
    out = generate(
        params,
        cfg,
        [list(request.prompt)],
        s.max_new_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        stop_tokens=s.stop_tokens,
        rng=np.asarray(seed, np.uint32) if isinstance(seed, tuple) else seed,
    )
    n = int(out.lengths[0])
    return out.tokens[0, :n].tolist(), out.logprobs[0, :n].tolist()


@dataclasses.dataclass
class _Running:
    rid: int
    request: Request
    tokens: list[int]
    logprobs: list[float]
    sent: int = 0


class StaticEngine:
    """`RolloutEngine` over `generate`, `chunk` tokens per request per step (see module)."""

    def __init__(
        self,
        params: Params,
        cfg: Qwen3Config,
        *,
        chunk: int = 3,
        step_s: float = 0.0,
        max_seq_len: int | None = None,
    ) -> None:
        self.params, self.cfg, self.chunk = params, cfg, chunk
        self._max_seq_len = max_seq_len or cfg.max_position_embeddings
        self.step_s = step_s  # wall time a step takes, as a real decode chunk would
        self.version = 0
        self.added: list[Request] = []  # every request, in the order `add` saw them
        self.max_running = 0  # most requests running at once (continuous batching at work)
        self._waiting: collections.deque[tuple[int, Request]] = collections.deque()
        self._running: list[_Running] = []
        self._next_id = 0
        self.cancelled: list[int] = []  # request ids the server cancelled

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def add(self, request: Request) -> int:
        if min(request.prompt) < 0 or max(request.prompt) >= self.vocab_size:
            raise ValueError(f"prompt token ids must be in [0, {self.vocab_size})")
        rid, self._next_id = self._next_id, self._next_id + 1
        self._waiting.append((rid, request))
        self.added.append(request)
        return rid

    @property
    def max_seq_len(self) -> int:
        return self._max_seq_len

    def cancel(self, request_id: int) -> bool:
        self.cancelled.append(request_id)
        before = len(self._waiting) + len(self._running)
        self._waiting = collections.deque((i, r) for i, r in self._waiting if i != request_id)
        self._running = [r for r in self._running if r.rid != request_id]
        return len(self._waiting) + len(self._running) < before

    def has_work(self) -> bool:
        return bool(self._waiting or self._running)

    def step(self) -> list[Event]:
        while self._waiting:
            rid, request = self._waiting.popleft()
            self._running.append(
                _Running(rid, request, *sampler_output(self.params, self.cfg, request))
            )
        self.max_running = max(self.max_running, len(self._running))
        if self._running and self.step_s:
            time.sleep(self.step_s)
        events = []
        for r in list(self._running):
            lo, hi = r.sent, min(r.sent + self.chunk, len(r.tokens))
            r.sent = hi
            done = None
            if hi == len(r.tokens):
                stopped = bool(r.tokens) and r.tokens[-1] in r.request.sampling.stop_tokens
                done = Completion(
                    request_id=r.rid,
                    tokens=tuple(r.tokens),
                    logprobs=tuple(r.logprobs),
                    finish_reason="stop" if stopped else "length",
                    prompt_tokens=len(r.request.prompt),
                    cached_prompt_tokens=0,
                    versions=(self.version,) * len(r.tokens),
                )
                self._running.remove(r)
            events.append(Event(r.rid, tuple(r.tokens[lo:hi]), tuple(r.logprobs[lo:hi]), done))
        return events

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        ids = [self.add(r) for r in requests]
        done: dict[int, Completion] = {}
        while self.has_work():
            done.update((e.request_id, e.done) for e in self.step() if e.done is not None)
        return [done[i] for i in ids]

    def update_weights(self, params: object, version: int) -> float:
        start = time.perf_counter()
        self.params, self.version = params, version  # type: ignore[assignment]
        return time.perf_counter() - start


def from_served_model(model: ServedModel) -> StaticEngine:
    """`jaxrepair serve --engine tests.engine.static_engine:from_served_model`."""
    return StaticEngine(model.params, model.cfg, max_seq_len=model.max_model_len)


# ------------------------------------------------------------------- the tool-calling model
SYSTEM = "You repair broken Python repositories."
USER = "The build fails:\nImportError: cannot import name 'slugify' from 'slugkit'\nFix it."
CALL = ToolCall("read_file", {"path": "src/slugkit/__init__.py"})
THINKING = "The import fails."
TOOL_RESULT = "from .core import slugkit_main\n__all__ = ['slugkit_main']\n"
ANSWER = "Fixed: slugkit builds."


def conversation(turn: int) -> list[dict]:
    """An episode's messages before assistant turn `turn` (1, 2), as `jaxrepair.envs`
    records them (call ids, tool results tied to them) and as the teacher client sends them
    (its OpenAI messages carry no reasoning)."""
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    if turn == 2:
        call = {**CALL.to_message(), "id": "call_1_0"}
        msgs += [
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "name": CALL.name, "tool_call_id": "call_1_0", "content": TOOL_RESULT},
        ]
    return msgs


def reply_text(turn: int) -> str:
    """What the trained model writes at turn `turn` (before its <|im_end|>)."""
    if turn == 1:
        return f"<think>\n{THINKING}\n</think>\n\n{format_tool_call(CALL)}"
    return ANSWER


@dataclasses.dataclass(frozen=True)
class ToolModel:
    cfg: Qwen3Config
    params: Params
    tokenizer: Tokenizer


def _random_params(cfg: Qwen3Config, rng: np.random.Generator) -> Params:
    """Normal(0, 0.02) weights, norm weights around 1 (numpy: no compile for an init)."""

    def init(path, sds):
        if "norm" in jax.tree_util.keystr(path):
            return jnp.asarray(1.0 + 0.1 * rng.standard_normal(sds.shape), jnp.float32)
        return jnp.asarray(0.02 * rng.standard_normal(sds.shape), jnp.float32)

    return dict(jax.tree_util.tree_map_with_path(init, param_shapes(cfg)))


def tool_model(seed: int = 0) -> ToolModel:
    """A random tiny Qwen3 whose LM head is solved so that greedy decoding answers
    `conversation(1)` (with TOOLS) by `reply_text(1)` and `conversation(2)` by
    `reply_text(2)`, each followed by <|im_end|>.

    Teacher forcing gives the final hidden state h_t at every reply position (one forward
    pass, the head set to an identity probe); the head W solves h_t W = 10 * onehot(next
    token) exactly (fewer positions than hidden units, so a least-squares solution fits
    them all), plus random columns orthogonal to those states for every other input. Greedy
    decoding then regenerates the same states, so it writes the reply token for token.
    """
    tok = make_tokenizer()
    cfg = Qwen3Config.preset("tiny", vocab_size=tok.vocab_size, tie_word_embeddings=False)
    d, v = cfg.hidden_size, cfg.vocab_size
    rows = []
    for turn in (1, 2):
        prompt = encode_prompt(conversation(turn), tok, tools=TOOLS)
        rows.append((prompt, tok.encode(reply_text(turn)) + [tok.im_end_id]))
    width = max(len(p) + len(r) for p, r in rows)
    batch = np.full((len(rows), width), tok.pad_id, np.int32)
    for i, (p, r) in enumerate(rows):
        batch[i, : len(p) + len(r)] = p + r
    params = _random_params(cfg, np.random.default_rng(seed))
    probe = {**params, "lm_head": jnp.eye(d, v, dtype=jnp.float32)}
    hidden = np.asarray(forward(probe, cfg, jnp.asarray(batch)), np.float64)[..., :d]
    states, targets = [], []
    for i, (p, r) in enumerate(rows):  # position t predicts token t + 1
        states.append(hidden[i, len(p) - 1 : len(p) + len(r) - 1])
        targets += r
    h = np.concatenate(states)
    if np.linalg.matrix_rank(h) < len(h):
        raise AssertionError("reply states are linearly dependent: pick another seed")
    y = np.zeros((len(h), v))
    y[np.arange(len(h)), targets] = 10.0
    pinv = np.linalg.pinv(h)
    noise = np.random.default_rng(seed + 1).normal(0.0, 1.0, (d, v))
    head = pinv @ y + (np.eye(d) - pinv @ h) @ noise
    params["lm_head"] = jnp.asarray(head, jnp.float32)
    return ToolModel(cfg, params, tok)

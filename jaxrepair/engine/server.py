"""An OpenAI-compatible HTTP endpoint over any `RolloutEngine` (`jaxrepair serve CHECKPOINT`).

Why this shape:
- Engines are not thread-safe, so one driver thread owns the engine: HTTP handler threads
  (one per connection, `ThreadingHTTPServer`) submit requests to it and wait on their own
  queues. Requests that arrive while others run join the engine's continuous batch; the n
  choices of one request are added together, so the engine shares their prompt.
- The server knows the engine only through `jaxrepair.engine.api`: any engine (ours, or an
  external one) is served by passing it to `OpenAIServer`.
- Text is decoded incrementally per token (a token that ends inside a UTF-8 character waits
  for the next); stop strings are cut from the text; streaming sends only text that can no
  longer change (see `openai_schema.chat_view`), so the streamed deltas add up to exactly
  the non-streamed reply.
- Standard library HTTP (no new dependency): HTTP/1.1 keep-alive, chunked SSE streams.

When a client goes away, or every choice of a request has ended on a stop string, the
driver cancels the request's engine requests, so their slots go to others.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import queue
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jaxrepair.engine.api import Completion, Event, Request, RolloutEngine, Sampling
from jaxrepair.engine.openai_schema import (
    ApiError,
    ChatRequest,
    ChatView,
    CompletionRequest,
    Options,
    chat_view,
    context_error,
    openai_tool_call,
    parse_chat,
    parse_completion,
    usage,
)
from jaxrepair.envs.chat import encode_prompt
from jaxrepair.envs.tokenizer import Tokenizer, bytes_to_unicode
from jaxrepair.errors import UserError
from jaxrepair.model.config import Qwen3Config
from jaxrepair.model.qwen3 import Params

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
POLL_S = 0.5  # how often a waiting handler checks that the driver is still alive


# ------------------------------------------------------------------------------ the driver
_ACCEPTED = "accepted"  # queue item: every request of the submission is in the engine
QueueItem = str | tuple[int, Event] | ApiError  # _ACCEPTED, (choice index, event), or an error


class Submission:
    """The engine requests of one HTTP call. The driver posts `_ACCEPTED`, then
    (choice index, Event) pairs, or an `ApiError`, to `queue`."""

    def __init__(self, requests: Sequence[Request]) -> None:
        self.requests = list(requests)
        self.queue: queue.SimpleQueue[QueueItem] = queue.SimpleQueue()
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop delivering events; the driver then cancels the engine requests."""
        self.cancelled.set()


class EngineDriver:
    """The one thread that calls the engine: admits submissions between engine steps and
    routes each step's events to their submissions' queues."""

    def __init__(self, engine: RolloutEngine) -> None:
        self.engine = engine
        self._inbox: queue.SimpleQueue[Submission] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._down: ApiError | None = None  # set once the driver stops taking work
        self._thread = threading.Thread(target=self._run, name="engine-driver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, requests: Sequence[Request]) -> Submission:
        sub = Submission(requests)
        with self._lock:
            if self._down is not None:
                raise self._down.copy()
            self._inbox.put(sub)
        return sub

    def next_item(self, sub: Submission) -> QueueItem:
        """The submission's next queue item; an ApiError when the driver has stopped."""
        while True:
            try:
                return sub.queue.get(timeout=POLL_S)
            except queue.Empty:
                if not self._thread.is_alive():
                    try:
                        return sub.queue.get_nowait()
                    except queue.Empty:
                        if self._down is not None:
                            return self._down.copy()
                        return ApiError("the engine stopped", status=503, code="engine_failed")

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)

    def _run(self) -> None:
        routes: dict[int, tuple[Submission, int]] = {}
        down = ApiError(
            "the server is shutting down", status=503, type="server_error", code="shutting_down"
        )
        try:
            while not self._stop.is_set():
                subs: list[Submission] = []
                if not self.engine.has_work():
                    try:
                        subs.append(self._inbox.get(timeout=0.05))
                    except queue.Empty:
                        continue
                while True:
                    try:
                        subs.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                for sub in subs:
                    self._admit(sub, routes)
                for rid in [r for r, (sub, _) in routes.items() if sub.cancelled.is_set()]:
                    self.engine.cancel(rid)
                    del routes[rid]
                if self.engine.has_work():
                    self._route(self.engine.step(), routes)
        except BaseException as e:  # noqa: BLE001 - reported to every waiting client
            log.exception("the engine failed; the server answers 503 from now on")
            down = ApiError(
                f"the engine failed: {type(e).__name__}: {e}",
                status=503,
                type="server_error",
                code="engine_failed",
            )
        with self._lock:
            self._down = down
            pending = {id(s): s for s, _ in routes.values()}
            while True:
                try:
                    sub = self._inbox.get_nowait()
                except queue.Empty:
                    break
                pending[id(sub)] = sub
        for sub in pending.values():
            sub.queue.put(down.copy())

    def _admit(self, sub: Submission, routes: dict[int, tuple[Submission, int]]) -> None:
        if sub.cancelled.is_set():
            return
        added: list[int] = []
        try:
            for i, request in enumerate(sub.requests):
                added.append(self.engine.add(request))
                routes[added[-1]] = (sub, i)
        except ValueError as e:  # the engine's own limits (e.g. its KV pool)
            for rid in added:
                self.engine.cancel(rid)
                del routes[rid]
            sub.cancel()
            sub.queue.put(ApiError(str(e), code="invalid_value"))
            return
        sub.queue.put(_ACCEPTED)

    @staticmethod
    def _route(events: list[Event], routes: dict[int, tuple[Submission, int]]) -> None:
        for ev in events:
            route = routes.get(ev.request_id)
            if route is None:
                continue
            if ev.done is not None:
                del routes[ev.request_id]
            sub, index = route
            if not sub.cancelled.is_set():
                sub.queue.put((index, ev))


# ------------------------------------------------------------------------------ choice text
class ChoiceText:
    """One choice's output: its tokens and log-probs, its text decoded incrementally, stop
    strings applied. A stop token ends the choice and adds no text."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        stop: Sequence[str],
        stop_ids: Sequence[int],
        skip_special_tokens: bool,
    ) -> None:
        self._tok = tokenizer
        self._stop = tuple(stop)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._stop_ids = frozenset(stop_ids)
        self._skip = skip_special_tokens
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.token_texts: list[str] = []  # the text each token added ("" if none yet)
        self.text = ""
        self.finish_reason: str | None = None
        self.completion: Completion | None = None
        self._ids: list[int] = []  # token ids that carry text
        self._prefix = 0  # detokenizer window: ids[_prefix:_read] decode to text already out
        self._read = 0

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def _decode(self, final: bool) -> str:
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read], self._skip)
        new_text = self._tok.decode(self._ids[self._prefix :], self._skip)
        if len(new_text) <= len(prefix_text) or (new_text.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return new_text[len(prefix_text) :]

    def _append(self, delta: str) -> None:
        start = max(0, len(self.text) - self._hold)
        self.text += delta
        if self._stop and delta:
            hits = [p for p in (self.text.find(s, start) for s in self._stop) if p != -1]
            if hits:
                self.text = self.text[: min(hits)]
                self.finish_reason = "stop"

    def feed(self, event: Event) -> None:
        for token, logprob in zip(event.tokens, event.logprobs, strict=True):
            if self.done:
                return
            self.tokens.append(token)
            self.logprobs.append(logprob)
            if token in self._stop_ids:
                self.token_texts.append("")
                continue
            self._ids.append(token)
            before = len(self.text)
            self._append(self._decode(final=False))
            self.token_texts.append(self.text[before:])
        if event.done is not None and not self.done:
            self.completion = event.done
            if self._read < len(self._ids):  # a last incomplete character, as U+FFFD
                before = len(self.text)
                self._append(self._decode(final=True))
                if self.token_texts:
                    self.token_texts[-1] += self.text[before:]
            if not self.done:
                self.finish_reason = event.done.finish_reason

    def stable_text(self) -> str:
        """The text no later token can change (a stop string may still cut the tail)."""
        if self.done or not self._hold:
            return self.text
        return self.text[: max(0, len(self.text) - self._hold)]


_BYTE_DECODER = {ch: b for b, ch in bytes_to_unicode().items()}


def token_bytes(tokenizer: Tokenizer, token: int, added: frozenset[int]) -> list[int]:
    """The raw bytes a token stands for (byte-level BPE), or, for an added token (`added`)
    and other vocabularies, its text's UTF-8 bytes."""
    piece = tokenizer.id_to_token(token) or ""
    if token not in added and all(c in _BYTE_DECODER for c in piece):
        return [_BYTE_DECODER[c] for c in piece]
    return list(tokenizer.decode([token]).encode())


def choice_seed(seed: int | None, index: int) -> tuple[int, int]:
    """The engine key of choice `index` (counted over prompts x n): it draws as row `index`
    of `generate(..., rng=seed)` does (fold_in(key(seed), index)); fresh randomness without
    a seed."""
    import jax

    if seed is None:
        seed = secrets.randbits(63)
    data = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), index))
    return int(data[0]), int(data[1])


# ------------------------------------------------------------------------------------ a job
class _Job:
    """The choices of one HTTP call (prompts x n) and their progress."""

    def __init__(
        self,
        server: OpenAIServer,
        prompts: list[list[int]],
        options: Options,
        param: str,
    ) -> None:
        self.server = server
        self.prompts = prompts
        self.options = options
        self.created = int(time.time())
        stop_ids = tuple(dict.fromkeys((*server.stop_ids, *options.stop_token_ids)))
        requests = []
        for prompt in prompts:
            err = context_error(len(prompt), options.max_tokens, server.max_context, param)
            if err is not None:
                raise err
            try:
                sampling = Sampling(
                    max_new_tokens=options.max_tokens or server.max_context - len(prompt),
                    temperature=options.temperature,
                    top_p=options.top_p,
                    top_k=options.top_k,
                    stop_tokens=stop_ids,
                )
            except ValueError as e:
                raise ApiError(str(e)) from None
            requests += [
                Request(tuple(prompt), sampling, choice_seed(options.seed, len(requests) + j))
                for j in range(options.n)
            ]
        self.choices = [
            ChoiceText(server.tokenizer, options.stop, stop_ids, options.skip_special_tokens)
            for _ in requests
        ]
        self.sub = server.driver.submit(requests)
        item = server.driver.next_item(self.sub)
        if isinstance(item, ApiError):
            raise item
        assert item == _ACCEPTED, item

    def updates(self) -> Iterator[int]:
        """Feed events to the choices until all are done; yields each updated choice index."""
        try:
            while not all(c.done for c in self.choices):
                item = self.server.driver.next_item(self.sub)
                if isinstance(item, ApiError):
                    raise item
                assert isinstance(item, tuple), item
                index, event = item
                if self.choices[index].done:  # ended by a stop string: the rest is dropped
                    continue
                self.choices[index].feed(event)
                yield index
        finally:
            self.sub.cancel()  # done, or the client went away: drop what is still coming

    def usage(self) -> dict:
        n = self.options.n
        cached = 0
        for p in range(len(self.prompts)):
            got = [
                c.completion.cached_prompt_tokens
                for c in self.choices[p * n : (p + 1) * n]
                if c.completion
            ]
            cached += min(got, default=0)
        return usage(
            sum(len(p) for p in self.prompts), sum(len(c.tokens) for c in self.choices), cached
        )

    def chat_logprobs(self, choice: ChoiceText, start: int = 0) -> dict | None:
        if not self.options.logprobs:
            return None
        tok = self.server.tokenizer
        return {
            "content": [
                {
                    "token": tok.decode([t]),
                    "logprob": lp,
                    "bytes": token_bytes(tok, t, self.server.added_ids),
                    "top_logprobs": [],
                }
                for t, lp in zip(choice.tokens[start:], choice.logprobs[start:], strict=True)
            ]
        }

    def text_logprobs(self, choice: ChoiceText, start: int = 0) -> dict | None:
        if not self.options.logprobs:
            return None
        offset = sum(len(t) for t in choice.token_texts[:start])
        offsets = []
        for t in choice.token_texts[start:]:
            offsets.append(offset)
            offset += len(t)
        return {
            "tokens": [self.server.tokenizer.decode([t]) for t in choice.tokens[start:]],
            "token_logprobs": choice.logprobs[start:],
            "top_logprobs": None,
            "text_offset": offsets,
        }


def _finish_reason(view: ChatView, choice: ChoiceText) -> str | None:
    if view.tool_calls and choice.finish_reason == "stop":
        return "tool_calls"
    return choice.finish_reason


def _message(view: ChatView) -> dict:
    msg: dict = {"role": "assistant", "content": view.content or (None if view.tool_calls else "")}
    if view.reasoning:
        msg["reasoning_content"] = view.reasoning
    if view.tool_calls:
        msg["tool_calls"] = [openai_tool_call(c, i) for i, c in enumerate(view.tool_calls)]
    return msg


# ------------------------------------------------------------------------------ HTTP handler
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "jaxrepair"
    timeout = 60  # seconds a client may stall while sending a request
    server: OpenAIServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    # ------------------------------------------------------------------------- plumbing
    def _dispatch(self) -> None:
        self._streaming = False
        try:
            path = urlsplit(self.path).path.rstrip("/")
            routes = {
                "/v1/chat/completions": ("POST", self._chat),
                "/v1/completions": ("POST", self._completions),
                "/v1/models": ("GET", self._models),
                "/health": ("GET", self._health),
            }
            if path.startswith("/v1/models/"):
                routes[path] = ("GET", self._model)
            if path not in routes:
                self.close_connection = self.command != "GET"  # a body may follow, unread
                raise ApiError(f"no route {path or '/'}", status=404, code="not_found")
            method, handler = routes[path]
            if self.command != method:
                self.close_connection = True
                raise ApiError(
                    f"{path} takes {method}, not {self.command}",
                    status=405,
                    code="method_not_allowed",
                )
            handler()
        except ApiError as e:
            self._fail(e)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - a bug: logged, and the client gets a 500
            log.exception("error while serving %s %s", self.command, self.path)
            self._fail(
                ApiError(
                    f"internal error: {type(e).__name__}: {e}",
                    status=500,
                    type="server_error",
                    code="internal_error",
                )
            )

    def _fail(self, e: ApiError) -> None:
        try:
            if self._streaming:  # the status line is out: report inside the stream
                self._sse(e.body())
                self._end_stream()
            else:
                self._send_json(e.status, e.body())
        except OSError:
            self.close_connection = True

    def _send_json(self, status: int, obj: object) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> object:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(
                "send the body with a Content-Length", status=411, code="length_required"
            )
        raw_len = self.headers.get("Content-Length")
        if raw_len is None:
            raise ApiError("a JSON body is required", status=411, code="length_required")
        try:
            n = int(raw_len)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ApiError(f"bad Content-Length {raw_len!r}", code="invalid_request") from None
        if n > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(
                f"the body is {n} bytes; the limit is {MAX_BODY_BYTES}",
                status=413,
                code="request_too_large",
            )
        try:
            raw = self.rfile.read(n)
        except TimeoutError:
            self.close_connection = True
            raise ApiError(
                f"timed out after {self.timeout} s reading the body",
                status=408,
                code="request_timeout",
            ) from None
        if len(raw) < n:
            self.close_connection = True
            raise ApiError("the body is shorter than its Content-Length", code="invalid_request")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ApiError(f"the body is not valid JSON: {e}", code="invalid_json") from None
        try:  # JSON may escape a lone UTF-16 surrogate, which is no text to tokenize
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ApiError(
                "the body holds a lone UTF-16 surrogate escape (not valid Unicode text)",
                code="invalid_json",
            ) from None
        return body

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._streaming = True

    def _sse(self, obj: object) -> None:
        self._chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_stream(self) -> None:
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self._streaming = False

    # --------------------------------------------------------------------------- routes
    def _health(self) -> None:
        self._send_json(200, {"status": "ok"})

    def _model_card(self) -> dict:
        srv = self.server
        return {
            "id": srv.model_name,
            "object": "model",
            "created": srv.created,
            "owned_by": "jaxrepair",
            "max_model_len": srv.max_context,
        }

    def _models(self) -> None:
        self._send_json(200, {"object": "list", "data": [self._model_card()]})

    def _model(self) -> None:
        name = unquote(urlsplit(self.path).path.rstrip("/")[len("/v1/models/") :])
        if name != self.server.model_name:
            raise ApiError(f"the model '{name}' does not exist", status=404, code="model_not_found")
        self._send_json(200, self._model_card())

    def _chat(self) -> None:
        srv = self.server
        req = parse_chat(self._body(), srv.model_name, srv.vocab_size)
        try:
            prompt = encode_prompt(req.messages, srv.tokenizer, req.tools, req.enable_thinking)
        except ValueError as e:
            raise ApiError(str(e), param="messages") from None
        job = _Job(srv, [prompt], req.options, "messages")
        if req.options.stream:
            self._stream_chat(job, req)
            return
        for _ in job.updates():
            pass
        choices = []
        for i, c in enumerate(job.choices):
            view = chat_view(c.text, final=True, parse_tools=req.parse_tools)
            choices.append(
                {
                    "index": i,
                    "message": _message(view),
                    "logprobs": job.chat_logprobs(c),
                    "finish_reason": _finish_reason(view, c),
                }
            )
        self._send_json(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": job.created,
                "model": srv.model_name,
                "choices": choices,
                "usage": job.usage(),
            },
        )

    def _stream_chat(self, job: _Job, req: ChatRequest) -> None:
        rid, opts = f"chatcmpl-{uuid.uuid4().hex}", req.options

        def chunk(choices: list[dict], use: dict | None = None) -> dict:
            out = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": job.created,
                "model": self.server.model_name,
                "choices": choices,
            }
            if opts.include_usage:
                out["usage"] = use
            return out

        self._start_stream()
        self._sse(
            chunk(
                [
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                    for i in range(len(job.choices))
                ]
            )
        )
        sent = [ChatView("", "") for _ in job.choices]
        sent_tokens = [0] * len(job.choices)
        for i in job.updates():
            c = job.choices[i]
            view = chat_view(c.stable_text(), final=c.done, parse_tools=req.parse_tools)
            delta: dict = {}
            if len(view.reasoning) > len(sent[i].reasoning):
                delta["reasoning_content"] = view.reasoning[len(sent[i].reasoning) :]
            if len(view.content) > len(sent[i].content):
                delta["content"] = view.content[len(sent[i].content) :]
            if view.tool_calls:
                delta["tool_calls"] = [
                    openai_tool_call(t, k, stream=True) for k, t in enumerate(view.tool_calls)
                ]
            logprobs = job.chat_logprobs(c, sent_tokens[i])
            if delta or (logprobs and logprobs["content"]) or c.done:
                self._sse(
                    chunk(
                        [
                            {
                                "index": i,
                                "delta": delta,
                                "logprobs": logprobs,
                                "finish_reason": _finish_reason(view, c) if c.done else None,
                            }
                        ]
                    )
                )
            sent[i] = view
            sent_tokens[i] = len(c.tokens)
        if opts.include_usage:
            self._sse(chunk([], job.usage()))
        self._end_stream()

    def _completions(self) -> None:
        srv = self.server
        req: CompletionRequest = parse_completion(self._body(), srv.model_name, srv.vocab_size)
        prompts = [srv.tokenizer.encode(p) if isinstance(p, str) else list(p) for p in req.prompts]
        if any(not p for p in prompts):
            raise ApiError("'prompt' encodes to no tokens", param="prompt")
        job = _Job(srv, prompts, req.options, "prompt")
        rid = f"cmpl-{uuid.uuid4().hex}"

        def body(choices: list[dict], use: dict | None) -> dict:
            out = {
                "id": rid,
                "object": "text_completion",
                "created": job.created,
                "model": srv.model_name,
                "choices": choices,
            }
            if not req.options.stream or req.options.include_usage:
                out["usage"] = use
            return out

        if not req.options.stream:
            for _ in job.updates():
                pass
            choices = [
                {
                    "index": i,
                    "text": c.text,
                    "logprobs": job.text_logprobs(c),
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(job.choices)
            ]
            self._send_json(200, body(choices, job.usage()))
            return
        self._start_stream()
        sent_text = [0] * len(job.choices)
        sent_tokens = [0] * len(job.choices)
        for i in job.updates():
            c = job.choices[i]
            text = c.stable_text()
            if len(text) > sent_text[i] or c.done:
                self._sse(
                    body(
                        [
                            {
                                "index": i,
                                "text": text[sent_text[i] :],
                                "logprobs": job.text_logprobs(c, sent_tokens[i]),
                                "finish_reason": c.finish_reason,
                            }
                        ],
                        None,
                    )
                )
                sent_text[i], sent_tokens[i] = len(text), len(c.tokens)
        if req.options.include_usage:
            self._sse(body([], job.usage()))
        self._end_stream()


# ------------------------------------------------------------------------------- the server
class OpenAIServer(ThreadingHTTPServer):
    """OpenAI-compatible endpoint over `engine`: `/v1/chat/completions`, `/v1/completions`,
    `/v1/models`, `/health`. `start()` serves in a background thread; `close()` stops."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        engine: RolloutEngine,
        tokenizer: Tokenizer,
        *,
        model_name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        stop_ids: Sequence[int] | None = None,
    ) -> None:
        max_context = engine.max_seq_len  # the longest prompt + completion the engine takes
        if max_context < 2:
            raise ValueError(f"the engine's max_seq_len must be >= 2, got {max_context}")
        if tokenizer.vocab_size > engine.vocab_size:
            raise ValueError(
                f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                f"{engine.vocab_size}: wrong tokenizer for this checkpoint"
            )
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_context = max_context
        self.vocab_size = engine.vocab_size
        self.stop_ids = tuple(tokenizer.stop_ids if stop_ids is None else stop_ids)
        self.added_ids = frozenset(tokenizer.special_ids.values())
        self.created = int(time.time())
        self.driver = EngineDriver(engine)
        self._serving: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAIServer:
        self.driver.start()
        self._serving = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._serving.start()
        return self

    def close(self) -> None:
        """Stop accepting connections, answer requests in flight with 503, stop the driver."""
        if self._serving is not None:
            self.shutdown()
            self._serving = None
        self.server_close()
        self.driver.close()

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that drops its connection is routine; anything else is logged."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("connection from %s ended: %s", client_address, exc)
        else:
            log.exception("error on the connection from %s", client_address)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- `jaxrepair serve`
@dataclasses.dataclass(frozen=True)
class ServedModel:
    """A loaded checkpoint and the engine settings asked for on the command line."""

    cfg: Qwen3Config
    params: Params
    tokenizer: Tokenizer
    source: str
    step: int | None  # orbax step; None for a Hugging Face directory
    max_model_len: int
    dtype: str  # the engine's compute dtype
    slots: int
    num_blocks: int | None  # KV blocks; None: enough for one request of max_model_len


EngineFactory = Callable[[ServedModel], RolloutEngine]


def jax_engine(model: ServedModel) -> RolloutEngine:
    """Our engine (`jaxrepair.engine.jax_engine`) over the model, on the default device."""
    from jaxrepair.engine.jax_engine import EngineConfig, JaxEngine

    block = EngineConfig().block_size
    blocks = model.num_blocks or max(
        EngineConfig().num_blocks, -(-model.max_model_len // block) + 1
    )
    config = EngineConfig(
        slots=model.slots, num_blocks=blocks, max_seq_len=model.max_model_len, dtype=model.dtype
    )
    return JaxEngine(model.params, model.cfg, config)


def engine_factory(spec: str) -> EngineFactory:
    """`jax` (ours) or `MODULE:CALLABLE`, a callable (ServedModel) -> RolloutEngine."""
    if spec == "jax":
        return jax_engine
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise UserError(f"--engine must be 'jax' or MODULE:CALLABLE, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"--engine {spec}: {e}") from None
    if not callable(factory):
        raise UserError(f"--engine {spec} is not callable")
    return factory


def _compute_dtype(dtype: str) -> str:
    if dtype == "auto":
        import jax

        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"--dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    return dtype


def load_model(
    path: str,
    *,
    step: int | None = None,
    tokenizer: str | None = None,
    dtype: str = "auto",
    max_model_len: int | None = None,
    slots: int = 16,
    num_blocks: int | None = None,
) -> ServedModel:
    """Parameters and tokenizer of a Hugging Face directory, an orbax checkpoint directory
    or a run directory (its latest step, or `step`). The tokenizer is the checkpoint's own
    (an orbax checkpoint's `tokenizer/`) unless `tokenizer` names one."""
    import jax.numpy as jnp

    from jaxrepair.envs.tokenizer import load_tokenizer
    from jaxrepair.model.hf import load_hf
    from jaxrepair.train.checkpoint import TOKENIZER_SUBDIR, find_checkpoint_dir, load_params

    compute = _compute_dtype(dtype)
    if (Path(path) / "config.json").is_file():
        if step is not None:
            raise UserError(f"{path} is a Hugging Face directory: it has no steps (drop --step)")
        cfg, params = load_hf(path, dtype=jnp.dtype(compute))
        tok_spec: str = tokenizer or path
        got_step = None
    else:
        ck_dir = find_checkpoint_dir(path)
        if tokenizer is None and not (ck_dir / TOKENIZER_SUBDIR).is_dir():
            raise UserError(
                f"{path} has no {TOKENIZER_SUBDIR}/ beside its steps; name one with --tokenizer"
            )
        tok_spec = tokenizer or str(ck_dir / TOKENIZER_SUBDIR)
        cfg, params, got_step = load_params(path, step, dtype=jnp.dtype(compute))
    tok = load_tokenizer(tok_spec)
    limit = cfg.max_position_embeddings
    if max_model_len is None:
        max_model_len = limit
    if not 2 <= max_model_len <= limit:
        raise UserError(
            f"--max-model-len must be in [2, {limit}] (the model's max_position_embeddings), "
            f"got {max_model_len}"
        )
    if slots < 1 or (num_blocks is not None and num_blocks < 2):
        raise UserError("--slots must be >= 1 and --num-blocks >= 2")
    return ServedModel(
        cfg, params, tok, str(path), got_step, max_model_len, compute, slots, num_blocks
    )


def serve(
    model: ServedModel,
    factory: EngineFactory,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    model_name: str | None = None,
    ready: Callable[[str], None] = print,
) -> None:
    """Serve `model` on the engine `factory` builds until SIGINT or SIGTERM (main thread
    only); `ready(url)` once it listens."""
    engine = factory(model)
    try:
        server = OpenAIServer(
            engine,
            model.tokenizer,
            model_name=model_name or model.source,
            host=host,
            port=port,
        )
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    stop = threading.Event()
    handlers = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        ready(server.url)
        while not stop.wait(1.0):
            pass
    finally:
        server.close()
        for s, h in handlers.items():
            signal.signal(s, h)

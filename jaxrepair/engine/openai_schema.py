"""OpenAI's chat-completions and completions protocol: request validation and reply shaping.

Why a module of its own: what a client may send, what each field means here and how a
generated Qwen3 reply becomes an OpenAI message (content, `reasoning_content`, `tool_calls`)
is protocol logic the HTTP server only routes. Every malformed request becomes an `ApiError`
that names the offending parameter, so a client gets a 4xx with an OpenAI-style error body,
never a 500. Nothing here imports JAX.

Semantics that differ from OpenAI's, on purpose:
- log-probs are the sampled token's under softmax(logits / temperature) before top-k/top-p,
  the quantity RL uses (see `jaxrepair.engine.api`); alternatives (`top_logprobs`,
  completions' `logprobs` > 0) are not available and are refused;
- `top_k` (and `stop_token_ids`, `skip_special_tokens`, `chat_template_kwargs`) are accepted
  as vLLM's extensions are;
- a generated `<think>` block is returned as `reasoning_content` (vLLM's Qwen3 parser does the
  same); tool calls are parsed by `jaxrepair.envs.chat.parse_assistant`; a reply whose tool
  calls do not parse is returned whole as content, with no tool calls.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from collections.abc import Mapping, Sequence

from jaxrepair.envs.chat import (
    THINK_CLOSE,
    THINK_OPEN,
    TOOL_CALL_OPEN,
    ToolCall,
    parse_assistant,
)

MAX_N = 128
MAX_STOP = 16
INT64 = 2**63


class ApiError(Exception):
    """A request the server refuses: HTTP status and OpenAI's error fields."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = "invalid_value",
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.type = type

    def copy(self) -> ApiError:
        """The same error as a fresh exception (one instance is raised in one thread only)."""
        return ApiError(
            self.message, status=self.status, param=self.param, code=self.code, type=self.type
        )

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


# ----------------------------------------------------------------------------- field readers
_MISSING = object()


def _type_name(x: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(x), "number" if isinstance(x, int | float) else type(x).__name__
    )


def _wrong_type(param: str, want: str, got: object) -> ApiError:
    return ApiError(
        f"'{param}' must be {want}, got {_type_name(got)} {json.dumps(got)[:60]}",
        param=param,
        code="invalid_type",
    )


def _int(body: Mapping, key: str, default: int | None, lo: int, hi: int) -> int | None:
    v = body.get(key, _MISSING)
    if v is _MISSING or v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v:
        raise _wrong_type(key, "an integer", v)
    v = int(v)
    if not lo <= v <= hi:
        raise ApiError(f"'{key}' must be in [{lo}, {hi}], got {v}", param=key)
    return v


def _float(body: Mapping, key: str, default: float, lo: float, hi: float, *, lo_open=False):
    v = body.get(key, _MISSING)
    if v is _MISSING or v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _wrong_type(key, "a number", v)
    v = float(v)
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ApiError(f"'{key}' must be in {interval}, got {v:g}", param=key)
    return v


def _bool(body: Mapping, key: str, default: bool) -> bool:
    v = body.get(key, _MISSING)
    if v is _MISSING or v is None:
        return default
    if not isinstance(v, bool):
        raise _wrong_type(key, "a boolean", v)
    return v


def _unsupported(key: str, why: str) -> ApiError:
    return ApiError(f"'{key}' {why}", param=key, code="unsupported_parameter")


# ------------------------------------------------------------------------------- requests
@dataclasses.dataclass(frozen=True)
class Options:
    """Settings both endpoints share. `max_tokens` None: as many as the context allows
    (chat) or 16 (completions, OpenAI's default)."""

    model: str
    n: int
    max_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    stop: tuple[str, ...]
    stop_token_ids: tuple[int, ...]
    seed: int | None
    stream: bool
    include_usage: bool
    logprobs: bool
    skip_special_tokens: bool


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    options: Options
    messages: list[dict]  # in the form `jaxrepair.envs.chat.render` takes
    tools: list[dict] | None
    parse_tools: bool  # tools given and tool_choice is not "none"
    enable_thinking: bool


@dataclasses.dataclass(frozen=True)
class CompletionRequest:
    options: Options
    prompts: tuple[str | tuple[int, ...], ...]  # text or token ids, one per prompt


def _require_object(body: object) -> Mapping:
    if not isinstance(body, dict):
        raise ApiError(
            f"the request body must be a JSON object, got {_type_name(body)}", code="invalid_type"
        )
    return body


def _model(body: Mapping, served: str) -> str:
    model = body.get("model", _MISSING)
    if model is _MISSING or model is None:
        raise ApiError(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    if not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    if model != served:
        raise ApiError(
            f"the model '{model}' does not exist; this server serves '{served}'",
            status=404,
            param="model",
            code="model_not_found",
        )
    return model


def _stop(body: Mapping) -> tuple[str, ...]:
    v = body.get("stop")
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _wrong_type("stop", "a string or an array of strings", v)
    if len(items) > MAX_STOP:
        raise ApiError(f"'stop' takes at most {MAX_STOP} strings, got {len(items)}", param="stop")
    if any(not s for s in items):
        raise ApiError("'stop' strings must not be empty", param="stop")
    return tuple(dict.fromkeys(items))


def _token_ids(v: object, param: str, vocab: int) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in v
    ):
        raise _wrong_type(param, "an array of integer token ids", v)
    bad = [t for t in v if not 0 <= t < vocab]
    if bad:
        raise ApiError(
            f"'{param}' holds token ids outside the vocabulary [0, {vocab}): {bad[:5]}",
            param=param,
        )
    return tuple(v)


def _options(body: Mapping, served: str, vocab: int, *, chat: bool) -> Options:
    model = _model(body, served)
    n = _int(body, "n", 1, 1, MAX_N)
    assert n is not None
    if chat:
        max_tokens = _int(body, "max_completion_tokens", None, 1, INT64 - 1)
        if max_tokens is None:
            max_tokens = _int(body, "max_tokens", None, 1, INT64 - 1)
    else:
        max_tokens = _int(body, "max_tokens", 16, 1, INT64 - 1)
    temperature = _float(body, "temperature", 1.0, 0.0, 1e6)
    top_p = _float(body, "top_p", 1.0, 0.0, 1.0, lo_open=True)
    top_k = _int(body, "top_k", 0, -1, INT64 - 1)
    seed = _int(body, "seed", None, -INT64, INT64 - 1)
    stream = _bool(body, "stream", False)
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise _wrong_type("stream_options", "an object", so)
    try:
        include_usage = _bool(so or {}, "include_usage", False)
    except ApiError as e:
        e.param = "stream_options.include_usage"
        raise
    if include_usage and not stream:
        raise ApiError("'stream_options' is only allowed with stream=true", param="stream_options")
    if chat:
        logprobs = _bool(body, "logprobs", False)
        if _int(body, "top_logprobs", 0, 0, 20):
            raise _unsupported(
                "top_logprobs", "is not supported: only the sampled token's log-prob is known"
            )
    else:
        lp = _int(body, "logprobs", None, 0, 5)
        if lp:
            raise _unsupported(
                "logprobs",
                "> 0 is not supported: only the sampled token's log-prob is known (use 0)",
            )
        logprobs = lp is not None
    for key in ("frequency_penalty", "presence_penalty"):
        if _float(body, key, 0.0, -2.0, 2.0) != 0.0:
            raise _unsupported(key, "is not supported (only 0)")
    if body.get("logit_bias"):
        raise _unsupported("logit_bias", "is not supported")
    stop_ids = body.get("stop_token_ids")
    return Options(
        model=model,
        n=n,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k if top_k and 0 < top_k < vocab else 0,  # >= vocab keeps every token: off
        stop=_stop(body),
        stop_token_ids=() if stop_ids is None else _token_ids(stop_ids, "stop_token_ids", vocab),
        seed=seed,
        stream=stream,
        include_usage=include_usage,
        logprobs=logprobs,
        skip_special_tokens=_bool(body, "skip_special_tokens", True),
    )


def _text_content(content: object, where: str) -> str | None:
    """A message's content as text: a string, null, or an array of text parts (joined)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ApiError(f"{where}: only text content parts are supported", param="messages")
            text = part.get("text")
            if not isinstance(text, str):
                raise _wrong_type(f"{where}.text", "a string", text)
            texts.append(text)
        return "\n".join(texts)
    raise _wrong_type(f"{where}.content", "a string, null or an array of text parts", content)


def _tool_call(call: object, where: str) -> dict:
    if not isinstance(call, dict):
        raise _wrong_type(where, "an object", call)
    fn = call.get("function")
    if not isinstance(fn, dict):
        raise _wrong_type(f"{where}.function", "an object", fn)
    name, args = fn.get("name"), fn.get("arguments", "{}")
    if not isinstance(name, str) or not name:
        raise _wrong_type(f"{where}.function.name", "a non-empty string", name)
    if not isinstance(args, str | dict):
        raise _wrong_type(f"{where}.function.arguments", "a JSON string", args)
    # A string is written verbatim, as Qwen3's chat template does.
    return {"type": "function", "function": {"name": name, "arguments": args}}


def _messages(v: object) -> list[dict]:
    if not isinstance(v, list) or not v:
        raise (
            ApiError("'messages' must not be empty", param="messages")
            if isinstance(v, list)
            else _wrong_type("messages", "a non-empty array of messages", v)
        )
    out = []
    for i, m in enumerate(v):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _wrong_type(where, "an object", m)
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise ApiError(
                f"{where}.role must be system, developer, user, assistant or tool, got "
                f"{json.dumps(role)[:40]}",
                param="messages",
            )
        msg: dict = {"role": role, "content": _text_content(m.get("content"), where)}
        if role == "assistant":
            calls = m.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list):
                    raise _wrong_type(f"{where}.tool_calls", "an array", calls)
                msg["tool_calls"] = [
                    _tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)
                ]
            rc = m.get("reasoning_content")
            if rc is not None:
                if not isinstance(rc, str):
                    raise _wrong_type(f"{where}.reasoning_content", "a string", rc)
                msg["reasoning_content"] = rc
        elif msg["content"] is None and role != "system":
            msg["content"] = ""
        out.append(msg)
    return out


def _tools(v: object) -> list[dict] | None:
    if v is None:
        return None
    if not isinstance(v, list):
        raise _wrong_type("tools", "an array of tools", v)
    for i, t in enumerate(v):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
            raise ApiError(
                f'tools[{i}] must be {{"type": "function", "function": {{...}}}}', param="tools"
            )
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _wrong_type(f"tools[{i}].function.name", "a non-empty string", fn.get("name"))
    return v or None


def parse_chat(body: object, served: str, vocab: int) -> ChatRequest:
    """A validated `/v1/chat/completions` request (raises `ApiError`)."""
    body = _require_object(body)
    options = _options(body, served, vocab, chat=True)
    if "messages" not in body:
        raise ApiError(
            "missing required parameter 'messages'",
            param="messages",
            code="missing_required_parameter",
        )
    messages = _messages(body["messages"])
    tools = _tools(body.get("tools"))
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise _unsupported(legacy, "is not supported: use tools and tool_choice")
    choice = body.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise _unsupported("tool_choice", 'supports only "auto" and "none"')
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise _unsupported("response_format", 'supports only {"type": "text"}')
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise _wrong_type("chat_template_kwargs", "an object", kwargs)
    return ChatRequest(
        options=options,
        messages=messages,
        tools=tools,
        parse_tools=tools is not None and choice != "none",
        enable_thinking=_bool(kwargs, "enable_thinking", True),
    )


def parse_completion(body: object, served: str, vocab: int) -> CompletionRequest:
    """A validated `/v1/completions` request (raises `ApiError`)."""
    body = _require_object(body)
    options = _options(body, served, vocab, chat=False)
    if "prompt" not in body:
        raise ApiError(
            "missing required parameter 'prompt'", param="prompt", code="missing_required_parameter"
        )
    for key in ("echo",):
        if _bool(body, key, False):
            raise _unsupported(key, "is not supported")
    if body.get("suffix") is not None:
        raise _unsupported("suffix", "is not supported")
    best_of = _int(body, "best_of", None, 1, MAX_N)
    if best_of is not None and best_of != options.n:
        raise _unsupported("best_of", "is not supported (leave it out or equal to n)")
    p = body["prompt"]
    prompts: list[str | tuple[int, ...]]
    if isinstance(p, str):
        prompts = [p]
    elif isinstance(p, list) and p and all(isinstance(x, str) for x in p):
        prompts = list(p)
    elif isinstance(p, list) and p and all(isinstance(x, list) for x in p):
        prompts = [_token_ids(x, f"prompt[{i}]", vocab) for i, x in enumerate(p)]
    elif isinstance(p, list) and p:
        prompts = [_token_ids(p, "prompt", vocab)]
    else:
        raise _wrong_type(
            "prompt",
            "a string, an array of strings, an array of token ids or an array of such arrays",
            p,
        )
    if any(len(x) == 0 for x in prompts):
        raise ApiError("'prompt' must not be empty", param="prompt")
    return CompletionRequest(options=options, prompts=tuple(prompts))


def context_error(
    prompt_len: int, max_tokens: int | None, max_context: int, prompt_param: str
) -> ApiError | None:
    """The error for a prompt (plus `max_tokens`) that does not fit the context, else None."""
    if prompt_len >= max_context:
        return ApiError(
            f"this model's maximum context length is {max_context} tokens; the prompt has "
            f"{prompt_len} tokens, which leaves no room for a completion",
            param=prompt_param,
            code="context_length_exceeded",
        )
    if max_tokens is not None and prompt_len + max_tokens > max_context:
        return ApiError(
            f"this model's maximum context length is {max_context} tokens; you requested "
            f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for "
            "the completion); reduce max_tokens or the prompt",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return None


# --------------------------------------------------------------------------- reply shaping
@dataclasses.dataclass(frozen=True)
class ChatView:
    """An assistant reply as OpenAI fields. For a reply still being generated, only what
    can no longer change: each field of a later view extends the earlier one's."""

    reasoning: str  # "" when the reply has no <think> block (yet)
    content: str
    tool_calls: tuple[ToolCall, ...] = ()


def _hold(text: str, markers: Sequence[str]) -> str:
    """`text` without a tail that may still change: trailing whitespace, or the start of one
    of `markers` (e.g. '</thi' before '</think>' is complete)."""
    for marker in markers:
        for k in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:k]):
                text = text[:-k]
                break
    return text.rstrip()


def chat_view(text: str, *, final: bool, parse_tools: bool) -> ChatView:
    """Split generated assistant text into reasoning, content and tool calls.

    A reply that starts with <think> has its thinking (up to </think>) as reasoning. The rest
    goes through `parse_assistant` when tools were offered: its tool calls and content, or,
    when any call fails to parse, the whole rest as content and no calls. Streaming sends the
    growth of the non-final views, so it adds up to the final view.
    """
    rest = text
    reasoning = ""
    if text.startswith(THINK_OPEN):
        inner = text[len(THINK_OPEN) :]
        close = inner.find(THINK_CLOSE)
        if close == -1:
            if final:
                return ChatView(inner.strip("\n"), "")
            return ChatView(_hold(inner.lstrip("\n"), (THINK_CLOSE,)), "")
        reasoning = inner[:close].strip("\n")
        rest = inner[close + len(THINK_CLOSE) :]
    elif not final and THINK_OPEN.startswith(text):
        return ChatView("", "")
    if not final:
        head = rest
        if parse_tools:
            at = head.find(TOOL_CALL_OPEN)
            head = head[:at] if at != -1 else _hold(head, (TOOL_CALL_OPEN,))
        return ChatView(reasoning, _hold(head.lstrip(), ()))
    if parse_tools:
        parsed = parse_assistant(rest)
        if parsed.ok and parsed.thinking is None:
            return ChatView(reasoning, parsed.content, tuple(parsed.tool_calls))
    return ChatView(reasoning, rest.strip())


def openai_tool_call(call: ToolCall, index: int, *, stream: bool = False) -> dict:
    """A parsed call in OpenAI's form (arguments as a JSON string, a fresh id)."""
    out = {
        "id": f"call_{secrets.token_hex(12)}",
        "type": "function",
        "function": {
            "name": call.name,
            "arguments": json.dumps(call.arguments, ensure_ascii=False),
        },
    }
    return {"index": index, **out} if stream else out


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }

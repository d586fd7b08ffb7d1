"""Qwen3 chat format: tool-call parsing/formatting, template rendering, tokenization with loss masks.

The text format follows Qwen3's published chat template (``qwen3_chat_template.jinja`` next to
this file). Assistant tool calls are written as::

    <tool_call>
    {"name": "read_file", "arguments": {"path": "setup.py"}}
    </tool_call>

This module never imports JAX.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"


@dataclass
class ToolCall:
    """One function call made by the assistant."""

    name: str
    arguments: dict = field(default_factory=dict)

    def to_message(self) -> dict:
        """The OpenAI/HF message form: ``{"type": "function", "function": {...}}``."""
        return {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class ParsedReply:
    """Generated assistant text split into visible content, thinking and tool calls."""

    content: str
    tool_calls: list[ToolCall]
    errors: list[str]
    thinking: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_message(self) -> dict:
        """An assistant message (OpenAI/HF form) that renders back to the same reply."""
        msg: dict = {"role": "assistant", "content": self.content}
        if self.thinking is not None:
            msg["reasoning_content"] = self.thinking
        if self.tool_calls:
            msg["tool_calls"] = [c.to_message() for c in self.tool_calls]
        return msg


def _tojson(x: object) -> str:
    # Same as the `tojson` filter transformers installs for chat templates.
    return json.dumps(x, ensure_ascii=False)


def format_tool_call(call: ToolCall) -> str:
    """The exact text Qwen3's template writes for one tool call (without surrounding newlines)."""
    args = call.arguments if isinstance(call.arguments, str) else _tojson(call.arguments)
    return f'{TOOL_CALL_OPEN}\n{{"name": "{call.name}", "arguments": {args}}}\n{TOOL_CALL_CLOSE}'


def _parse_call_body(body: str, index: int) -> tuple[ToolCall | None, str | None]:
    """Decode the JSON between <tool_call> tags; return (call, None) or (None, error)."""
    where = f"tool call #{index + 1}"
    text = body.strip()
    if not text:
        return None, f"{where}: empty <tool_call> block"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        snippet = text if len(text) <= 80 else text[:77] + "..."
        return (
            None,
            f"{where}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno}): {snippet!r}",
        )
    if not isinstance(obj, dict):
        return (
            None,
            f'{where}: expected a JSON object {{"name": ..., "arguments": {{...}}}}, got {type(obj).__name__}',
        )
    if "name" not in obj:
        return None, f'{where}: missing "name"'
    name = obj["name"]
    if not isinstance(name, str) or not name.strip():
        return None, f'{where}: "name" must be a non-empty string, got {name!r}'
    if "arguments" not in obj:
        return None, f'{where} ({name}): missing "arguments" (use {{}} for none)'
    args = obj["arguments"]
    if not isinstance(args, dict):
        return (
            None,
            f'{where} ({name}): "arguments" must be a JSON object, got {type(args).__name__}',
        )
    return ToolCall(name=name, arguments=args), None


_DECODER = json.JSONDecoder()


def _json_call_end(text: str, i: int) -> int | None:
    """Index of the </tool_call> closing a call whose body is one JSON value, else None."""
    n = len(text)
    while i < n and text[i] in " \t\r\n":
        i += 1
    try:
        _, j = _DECODER.raw_decode(text, i)
    except (json.JSONDecodeError, RecursionError):
        return None
    while j < n and text[j] in " \t\r\n":
        j += 1
    return j if text.startswith(TOOL_CALL_CLOSE, j) else None


def parse_assistant(text: str) -> ParsedReply:
    """Split generated assistant text into thinking, content and tool calls.

    Never raises: every malformed piece (bad JSON, missing name, non-object arguments, unclosed
    or stray tags) becomes a message in ``errors`` so the environment can answer with it.
    """
    if not isinstance(text, str):
        return ParsedReply("", [], [f"assistant output must be text, got {type(text).__name__}"])
    try:
        return _parse(text)
    except Exception as e:  # pragma: no cover - a bug here must not crash an episode
        return ParsedReply(
            text.strip(), [], [f"could not parse the reply ({type(e).__name__}: {e})"]
        )


def _parse(text: str) -> ParsedReply:
    errors: list[str] = []
    rest = text
    # Drop end-of-turn markers the sampler may have kept.
    for stop in (ENDOFTEXT, IM_END):
        rest = rest.rstrip()
        if rest.endswith(stop):
            rest = rest[: -len(stop)]

    # Think tags count only ahead of the first tool call (arguments may quote them).
    first_call = rest.find(TOOL_CALL_OPEN)
    head_end = len(rest) if first_call == -1 else first_call
    thinking: str | None = None
    close = rest.find(THINK_CLOSE, 0, head_end)
    if close != -1:
        lead, _, inner = rest[:close].rpartition(THINK_OPEN)
        rest = rest[close + len(THINK_CLOSE) :]
        if lead.strip():  # text ahead of <think> is kept as content, not lost
            rest = lead.rstrip() + "\n" + rest.lstrip("\n")
        thinking = inner.strip("\n")
        nxt = rest.find(TOOL_CALL_OPEN)
        head = rest if nxt == -1 else rest[:nxt]
        if THINK_CLOSE in head or THINK_OPEN in head:
            errors.append("more than one <think> block; only the first is used as thinking")
            rest = head.replace(THINK_OPEN, "").replace(THINK_CLOSE, "") + rest[len(head) :]
    elif (open_at := rest.find(THINK_OPEN, 0, head_end)) != -1:
        thinking = rest[open_at + len(THINK_OPEN) :].strip("\n")
        rest = rest[:open_at]
        errors.append("unclosed <think> block (no </think>); everything after <think> is thinking")

    calls: list[ToolCall] = []
    content_parts: list[str] = []
    pos = 0
    n_blocks = 0
    while True:
        start = rest.find(TOOL_CALL_OPEN, pos)
        stray = rest.find(TOOL_CALL_CLOSE, pos)
        if stray != -1 and (start == -1 or stray < start):
            errors.append("stray </tool_call> without a matching <tool_call>")
            content_parts.append(rest[pos:stray])
            pos = stray + len(TOOL_CALL_CLOSE)
            continue
        if start == -1:
            content_parts.append(rest[pos:])
            break
        content_parts.append(rest[pos:start])
        body_start = start + len(TOOL_CALL_OPEN)
        # Well-formed call: one JSON value, then </tool_call> (tags inside strings are fine).
        end = _json_call_end(rest, body_start)
        if end is None:
            end = rest.find(TOOL_CALL_CLOSE, body_start)
            nested = rest.find(TOOL_CALL_OPEN, body_start)
            if end == -1 or (nested != -1 and nested < end):
                stop = len(rest) if nested == -1 else nested
                errors.append(
                    f"tool call #{n_blocks + 1}: unclosed <tool_call> (no </tool_call> before "
                    f"{'the end of the reply' if nested == -1 else 'the next <tool_call>'})"
                )
                n_blocks += 1
                pos = stop
                if nested == -1:
                    break
                continue
        call, err = _parse_call_body(rest[body_start:end], n_blocks)
        n_blocks += 1
        if err is not None:
            errors.append(err)
        else:
            calls.append(call)
        pos = end + len(TOOL_CALL_CLOSE)

    content = "".join(content_parts).strip()
    return ParsedReply(content=content, tool_calls=calls, errors=errors, thinking=thinking)


# ---------------------------------------------------------------------------------------
# Rendering: a line-by-line Python port of Qwen3's chat template that also records which
# characters belong to the assistant (the loss-mask spans).

ROLES = ("system", "user", "assistant", "tool")
TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)


def _get(obj: object, key: str, default: object = None) -> object:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _call_name_args(call: object, where: str) -> tuple[str, object]:
    if isinstance(call, ToolCall):
        return call.name, call.arguments
    if not isinstance(call, dict):
        raise ValueError(
            f"{where}: a tool call must be a dict or ToolCall, got {type(call).__name__}"
        )
    fn = call.get("function")
    if fn:  # OpenAI form {"type": "function", "function": {...}}
        call = fn
    name = _get(call, "name")
    args = _get(call, "arguments", {})
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: tool call has no 'name'")
    if not isinstance(args, dict | str):
        raise ValueError(f"{where}: tool call 'arguments' must be a dict or a JSON string")
    return name, args


def _check_messages(messages: object) -> list[dict]:
    if not isinstance(messages, list | tuple) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"message {i}: expected a dict, got {type(m).__name__}")
        role = m.get("role")
        if role not in ROLES:
            raise ValueError(f"message {i}: unknown role {role!r}; expected one of {ROLES}")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError(f"message {i} ({role}): content must be a string or None")
        if role == "system" and i == 0 and content is None:
            raise ValueError("message 0 (system): content must be a string")
        rc = m.get("reasoning_content")
        if rc is not None and not isinstance(rc, str):
            raise ValueError(f"message {i} ({role}): reasoning_content must be a string or None")
        calls = m.get("tool_calls")
        if calls and role != "assistant":
            raise ValueError(f"message {i}: only assistant messages may carry tool_calls")
        if calls is not None and not isinstance(calls, list | tuple):
            raise ValueError(f"message {i}: tool_calls must be a list")
        for j, c in enumerate(calls or []):
            _call_name_args(c, f"message {i} tool_calls[{j}]")
        out.append(m)
    return out


def split_thinking(content: str) -> tuple[str, str]:
    """(reasoning, content) the way Qwen3's template splits an inline <think> block."""
    if THINK_CLOSE not in content:
        return "", content
    reasoning = content.split(THINK_CLOSE)[0].rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
    return reasoning, content.split(THINK_CLOSE)[-1].lstrip("\n")


def render_segments(
    messages: list[dict],
    tools: list[dict] | None = None,
    add_generation_prompt: bool = False,
    enable_thinking: bool = True,
    keep_thinking: bool | None = None,
) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, is_assistant_output) pieces.

    ``keep_thinking=None`` follows Qwen3's template exactly (reasoning is kept only for
    assistant turns after the last real user message); ``True`` keeps every turn's reasoning;
    ``False`` drops all reasoning (as if no turn had any).
    """
    messages = _check_messages(messages)
    if tools is not None and not isinstance(tools, list | tuple):
        raise ValueError("tools must be a list of JSON-schema dicts")
    segs: list[tuple[str, bool]] = []

    def emit(text: str, train: bool = False) -> None:
        if text:
            segs.append((text, train))

    first = messages[0]
    if tools:
        emit("<|im_start|>system\n")
        if first["role"] == "system":
            emit(first["content"] + "\n\n")
        emit(TOOLS_PREAMBLE)
        for tool in tools:
            emit("\n" + _tojson(tool))
        emit(TOOLS_POSTAMBLE)
    elif first["role"] == "system":
        emit("<|im_start|>system\n" + first["content"] + "<|im_end|>\n")

    n = len(messages)
    last_query_index = n - 1
    for index in range(n - 1, -1, -1):
        m = messages[index]
        c = m.get("content")
        if m["role"] == "user" and isinstance(c, str):
            if not (c.startswith("<tool_response>") and c.endswith("</tool_response>")):
                last_query_index = index
                break

    for i, m in enumerate(messages):
        role = m["role"]
        content = m.get("content") if isinstance(m.get("content"), str) else ""
        is_last = i == n - 1
        if role == "user" or (role == "system" and i > 0):
            emit(f"<|im_start|>{role}\n{content}<|im_end|>\n")
        elif role == "assistant":
            rc = m.get("reasoning_content")
            if isinstance(rc, str):
                reasoning = rc
            else:
                reasoning, content = split_thinking(content)
            if keep_thinking is False:
                reasoning = ""
            emit("<|im_start|>assistant\n")
            show = (keep_thinking is True and bool(reasoning)) or (
                i > last_query_index and (is_last or bool(reasoning))
            )
            if show:
                body = THINK_OPEN + "\n" + reasoning.strip("\n") + "\n" + THINK_CLOSE + "\n\n"
                body += content.lstrip("\n")
            else:
                body = content
            for j, call in enumerate(m.get("tool_calls") or []):
                if j > 0 or content:
                    body += "\n"
                name, args = _call_name_args(call, f"message {i}")
                body += format_tool_call(ToolCall(name, args))  # type: ignore[arg-type]
            emit(body + IM_END, train=True)
            emit("\n")
        elif role == "tool":
            if i == 0 or messages[i - 1]["role"] != "tool":
                emit("<|im_start|>user")
            emit("\n<tool_response>\n" + content + "\n</tool_response>")
            if is_last or messages[i + 1]["role"] != "tool":
                emit("<|im_end|>\n")
    if add_generation_prompt:
        emit("<|im_start|>assistant\n")
        if not enable_thinking:
            emit("<think>\n\n</think>\n\n")
    return segs


def render(
    messages: list[dict],
    tools: list[dict] | None = None,
    add_generation_prompt: bool = False,
    enable_thinking: bool = True,
    keep_thinking: bool | None = None,
) -> str:
    """Qwen3 chat-template text of a conversation (see ``render_segments`` for the options)."""
    segs = render_segments(messages, tools, add_generation_prompt, enable_thinking, keep_thinking)
    return "".join(t for t, _ in segs)


def encode_prompt(
    messages: list[dict],
    tokenizer: object,
    tools: list[dict] | None = None,
    enable_thinking: bool = True,
) -> list[int]:
    """Token ids of a conversation followed by the assistant generation prompt (for sampling)."""
    from jaxrepair.envs.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)  # type: ignore[arg-type]
    return tok.encode(
        render(messages, tools, add_generation_prompt=True, enable_thinking=enable_thinking)
    )


def assistant_spans(segments: list[tuple[str, bool]]) -> list[tuple[int, int]]:
    """Character spans [start, end) of the assistant outputs in the rendered text."""
    spans, pos = [], 0
    for text, train in segments:
        if train:
            spans.append((pos, pos + len(text)))
        pos += len(text)
    return spans


def encode_chat(
    messages: list[dict],
    tokenizer: object,
    tools: list[dict] | None = None,
    add_generation_prompt: bool = False,
    enable_thinking: bool = True,
    keep_thinking: bool | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and a loss mask (1 = train on this token).

    The mask covers each assistant turn's output: optional <think> block, content, tool
    calls and the closing <|im_end|>; never the ``<|im_start|>assistant\\n`` header nor
    system/user/tool text. The whole text is tokenized at once (ids equal
    ``tokenizer.encode(render(...))``); a token counts as assistant output when its
    characters overlap an assistant span. Special tokens and newlines delimit the spans, so
    tokens never straddle them, except when an assistant content itself starts with a
    newline (then the header's newline merges into a masked token).
    """
    from jaxrepair.envs.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)  # type: ignore[arg-type]
    segs = render_segments(messages, tools, add_generation_prompt, enable_thinking, keep_thinking)
    text = "".join(t for t, _ in segs)
    ids, offsets = tok.encode_with_offsets(text)
    spans = assistant_spans(segs)
    mask = [0] * len(ids)
    k = 0
    for t, (s, e) in enumerate(offsets):
        while k < len(spans) and spans[k][1] <= s:
            k += 1
        if k < len(spans) and s < spans[k][1] and e > spans[k][0]:
            mask[t] = 1
        elif k < len(spans) and s == e and spans[k][0] <= s < spans[k][1]:
            mask[t] = 1
    return ids, mask

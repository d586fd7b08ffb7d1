"""Qwen3 chat format as text: tool-call formatting and template rendering (with the character
spans of the assistant's output, from which loss masks are made).

The text follows Qwen3's published chat template (``qwen3_chat_template.jinja`` next to this
file). Pure text, no tokenizer: the tokenizer's own training corpus is rendered with it, and
`jaxrepair.envs.chat` (parsing and tokenization) builds on it.

This module never imports JAX.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

THINK_OPEN = "<think>"
EMPTY_THINK = "<think>\n\n</think>\n\n"  # the generation prompt's suffix with thinking off
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


def _tojson(x: object) -> str:
    # Same as the `tojson` filter transformers installs for chat templates.
    return json.dumps(x, ensure_ascii=False)


def format_tool_call(call: ToolCall) -> str:
    """The exact text Qwen3's template writes for one tool call (without surrounding newlines)."""
    args = call.arguments if isinstance(call.arguments, str) else _tojson(call.arguments)
    return f'{TOOL_CALL_OPEN}\n{{"name": "{call.name}", "arguments": {args}}}\n{TOOL_CALL_CLOSE}'


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
            emit(EMPTY_THINK)
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


def assistant_spans(segments: list[tuple[str, bool]]) -> list[tuple[int, int]]:
    """Character spans [start, end) of the assistant outputs in the rendered text."""
    spans, pos = [], 0
    for text, train in segments:
        if train:
            spans.append((pos, pos + len(text)))
        pos += len(text)
    return spans

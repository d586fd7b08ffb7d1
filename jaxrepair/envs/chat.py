"""Qwen3 chat format: tool-call parsing, template rendering, tokenization with loss masks.

Assistant tool calls are written as::

    <tool_call>
    {"name": "read_file", "arguments": {"path": "setup.py"}}
    </tool_call>

The text side (formatting, rendering) lives in `jaxrepair.envs.chat_template` and is
re-exported here; this module adds parsing of generated text and tokenization.

This module never imports JAX.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .chat_template import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    ROLES,
    THINK_CLOSE,
    THINK_OPEN,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    TOOLS_POSTAMBLE,
    TOOLS_PREAMBLE,
    ToolCall,
    assistant_spans,
    format_tool_call,
    render,
    render_segments,
    split_thinking,
)
from .tokenizer import load_tokenizer

__all__ = [
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "ROLES",
    "THINK_CLOSE",
    "THINK_OPEN",
    "TOOLS_POSTAMBLE",
    "TOOLS_PREAMBLE",
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "ParsedReply",
    "ToolCall",
    "assistant_spans",
    "encode_chat",
    "encode_prompt",
    "format_tool_call",
    "parse_assistant",
    "render",
    "render_segments",
    "split_thinking",
]


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


def encode_prompt(
    messages: list[dict],
    tokenizer: object,
    tools: list[dict] | None = None,
    enable_thinking: bool = True,
) -> list[int]:
    """Token ids of a conversation followed by the assistant generation prompt (for sampling)."""
    tok = load_tokenizer(tokenizer)  # type: ignore[arg-type]
    return tok.encode(
        render(messages, tools, add_generation_prompt=True, enable_thinking=enable_thinking)
    )


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

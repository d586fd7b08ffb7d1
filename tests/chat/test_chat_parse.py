"""parse_assistant: generated text -> content, thinking and tool calls; never raises."""

import json
import random

import pytest

from jaxrepair.envs import chat
from jaxrepair.envs.chat import ParsedReply, ToolCall, format_tool_call, parse_assistant

from .conversations import AGENT, TOOLS, assistant_outputs_from_text


def test_format_tool_call_is_the_template_text(hf_tiny):
    call = ToolCall("read_file", {"path": "src/ä.py", "n": [1, 2], "q": 'say "hi"'})
    msgs = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [call.to_message()]},
    ]
    text = hf_tiny.apply_chat_template(msgs, tokenize=False)
    assert format_tool_call(call) + "<|im_end|>" in text


def test_parse_round_trips_every_rendered_assistant_turn(hf_tiny):
    text = hf_tiny.apply_chat_template(AGENT, tools=TOOLS, tokenize=False)
    outputs = assistant_outputs_from_text(text)
    positions = [i for i, m in enumerate(AGENT) if m["role"] == "assistant"]
    assert len(outputs) == len(positions)
    rebuilt = list(AGENT)
    for out, pos in zip(outputs, positions, strict=True):
        msg = AGENT[pos]
        parsed = parse_assistant(out)
        assert parsed.ok, parsed.errors
        want_calls = []
        for c in msg.get("tool_calls") or []:
            fn = c.get("function", c)
            args = fn["arguments"]
            want_calls.append(
                ToolCall(fn["name"], json.loads(args) if isinstance(args, str) else args)
            )
        assert parsed.tool_calls == want_calls
        reasoning, content = chat.split_thinking(msg.get("content") or "")
        assert parsed.content == content.strip()
        assert (parsed.thinking or "") == (msg.get("reasoning_content") or reasoning)
        rebuilt[pos] = parsed.to_message()
    # the parsed replies, put back in place, render to the same conversation
    assert hf_tiny.apply_chat_template(rebuilt, tools=TOOLS, tokenize=False) == text


def test_parse_plain_and_thinking_text():
    assert parse_assistant("Hello.") == ParsedReply("Hello.", [], [], None)
    p = parse_assistant("<think>\nstep 1\nstep 2\n</think>\n\nAnswer<|im_end|>")
    assert (p.thinking, p.content, p.tool_calls, p.errors) == ("step 1\nstep 2", "Answer", [], [])
    # a completion after a prompt that pre-filled "<think>\n" lacks the opening tag
    p = parse_assistant("just thinking\n</think>\n\nDone")
    assert (p.thinking, p.content, p.errors) == ("just thinking", "Done", [])
    p = parse_assistant("Preface.\n<think>\nhm\n</think>\n\nDone")
    assert (p.thinking, p.content, p.errors) == ("hm", "Preface.\nDone", [])


BAD = [
    ("<tool_call>\n{bad json}\n</tool_call>", "invalid JSON"),
    ('<tool_call>\n{"arguments": {}}\n</tool_call>', 'missing "name"'),
    ('<tool_call>\n{"name": "", "arguments": {}}\n</tool_call>', "non-empty string"),
    ('<tool_call>\n{"name": 5, "arguments": {}}\n</tool_call>', "non-empty string"),
    ('<tool_call>\n{"name": "run_build"}\n</tool_call>', 'missing "arguments"'),
    (
        '<tool_call>\n{"name": "read_file", "arguments": ["a"]}\n</tool_call>',
        "must be a JSON object, got list",
    ),
    (
        '<tool_call>\n{"name": "read_file", "arguments": "{}"}\n</tool_call>',
        "must be a JSON object, got str",
    ),
    ('<tool_call>\n["read_file"]\n</tool_call>', "expected a JSON object"),
    ("<tool_call>\n\n</tool_call>", "empty <tool_call>"),
    (
        'Let me look.\n<tool_call>\n{"name": "read_file", "arguments": {"path": "a"',
        "unclosed <tool_call>",
    ),
    ("text </tool_call> more", "stray </tool_call>"),
    ("<think>\nforever thinking", "unclosed <think>"),
    ('<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call> {"x": 1}}', None),
]


@pytest.mark.parametrize("text, error", BAD)
def test_malformed_output_becomes_described_errors(text, error):
    p = parse_assistant(text)
    if error is None:
        assert p.ok and [c.name for c in p.tool_calls] == ["a"]
        return
    assert not p.ok
    assert any(error in e for e in p.errors), p.errors


def test_good_calls_survive_next_to_bad_ones():
    good = format_tool_call(ToolCall("read_file", {"path": "x"}))
    text = "Plan.\n" + good + "\n<tool_call>\n{oops}\n</tool_call>\n" + good.replace('"x"', '"y"')
    p = parse_assistant(text)
    assert [c.arguments["path"] for c in p.tool_calls] == ["x", "y"]
    assert len(p.errors) == 1 and "tool call #2" in p.errors[0]
    assert p.content == "Plan."


def test_unclosed_call_followed_by_a_good_one():
    good = format_tool_call(ToolCall("run_build", {}))
    p = parse_assistant('<tool_call>\n{"name": "x", "arguments": {}}\n' + good)
    assert [c.name for c in p.tool_calls] == ["run_build"]
    assert any("unclosed" in e for e in p.errors)


def test_tags_inside_arguments_do_not_break_the_call():
    args = {"path": "chat.py", "text": "x = '</tool_call>' + '<tool_call>' + '</think>'\n"}
    reply = "<think>\nedit\n</think>\n\nEditing.\n" + format_tool_call(ToolCall("write_file", args))
    p = parse_assistant(reply)
    assert p.ok, p.errors
    assert (p.thinking, p.content, p.tool_calls) == (
        "edit",
        "Editing.",
        [ToolCall("write_file", args)],
    )
    no_think = parse_assistant(format_tool_call(ToolCall("write_file", args)))
    assert no_think.ok and no_think.thinking is None and no_think.tool_calls[0].arguments == args


def test_never_raises_on_random_garbage():
    rng = random.Random(0)
    base = chat.render(AGENT, tools=TOOLS)
    pieces = [
        "<tool_call>",
        "</tool_call>",
        "<think>",
        "</think>",
        "{",
        "}",
        '"name"',
        ":",
        "\n",
        "<|im_end|>",
        "[",
        '"',
        "\\",
    ]
    for _ in range(400):
        start = rng.randrange(len(base))
        text = base[start : start + rng.randrange(400)]
        text = "".join(rng.choice(pieces) if rng.random() < 0.05 else ch for ch in text)
        p = parse_assistant(text)
        assert isinstance(p, ParsedReply)
        assert all(isinstance(c.arguments, dict) and c.name for c in p.tool_calls)
    deep = "<tool_call>" + "[" * 100_000 + "</tool_call>"
    for weird in (None, 3, b"<tool_call>", "", "\x00" * 10, "<tool_call>" * 50, deep):
        assert isinstance(parse_assistant(weird), ParsedReply)

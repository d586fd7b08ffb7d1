"""The renderer equals transformers' apply_chat_template with Qwen3's published template."""

import copy

import pytest

from jaxrepair.envs import chat
from jaxrepair.envs.tokenizer import qwen3_chat_template

from .conversations import AGENT, CASES, TOOLS


def _strip_reasoning(messages):
    out = []
    for m in copy.deepcopy(messages):
        if m["role"] == "assistant":
            m.pop("reasoning_content", None)
            if isinstance(m.get("content"), str):
                m["content"] = chat.split_thinking(m["content"])[1]
        out.append(m)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("with_tools", [False, True])
@pytest.mark.parametrize("gen", ["none", "think", "no_think"])
def test_render_equals_transformers(hf_tiny, case, with_tools, gen):
    msgs = CASES[case]
    tools = TOOLS if with_tools else None
    kwargs = {"add_generation_prompt": gen != "none"}
    if gen == "no_think":
        kwargs["enable_thinking"] = False
    want = hf_tiny.apply_chat_template(msgs, tools=tools, tokenize=False, **kwargs)
    got = chat.render(msgs, tools=tools, **kwargs)
    assert got == want


@pytest.mark.parametrize("case", sorted(CASES))
def test_drop_thinking_equals_template_without_reasoning(hf_tiny, case):
    msgs = CASES[case]
    want = hf_tiny.apply_chat_template(_strip_reasoning(msgs), tools=TOOLS, tokenize=False)
    got = chat.render(msgs, tools=TOOLS, keep_thinking=False)
    assert got == want
    # Only the empty think block Qwen3 adds to the final turn can remain.
    assert got.count("<think>") <= 1 and "<think>\n\n</think>" in got


def test_keep_thinking_keeps_every_turn(hf_tiny):
    msgs = CASES["multi_query"]
    kept = chat.render(msgs, keep_thinking=True)
    for thought in ("Simple arithmetic.", "old thought", "add"):
        assert f"<think>\n{thought}\n</think>\n\n" in kept
    template = chat.render(msgs)
    assert template == hf_tiny.apply_chat_template(msgs, tokenize=False)
    assert "Simple arithmetic." not in template and "old thought" not in template
    # Where the template already keeps every turn's reasoning, keep=True changes nothing.
    assert chat.render(AGENT, tools=TOOLS, keep_thinking=True) == chat.render(AGENT, tools=TOOLS)


def test_template_file_is_what_transformers_uses(hf_tiny):
    assert hf_tiny.chat_template == qwen3_chat_template()
    assert "enable_thinking" in hf_tiny.chat_template and "<tool_response>" in hf_tiny.chat_template


@pytest.mark.parametrize(
    "messages, words",
    [
        ([], "non-empty"),
        ([{"role": "robot", "content": "hi"}], "unknown role"),
        ([{"role": "user", "content": 3}], "content must be a string"),
        ([{"role": "user", "content": "x", "tool_calls": [{"name": "a"}]}], "only assistant"),
        ([{"role": "assistant", "content": "x", "tool_calls": [{"arguments": {}}]}], "no 'name'"),
        (
            [{"role": "assistant", "content": "", "tool_calls": [{"name": "a", "arguments": 3}]}],
            "arguments",
        ),
    ],
)
def test_bad_messages_give_clear_errors(messages, words):
    with pytest.raises(ValueError, match=words):
        chat.render(messages)

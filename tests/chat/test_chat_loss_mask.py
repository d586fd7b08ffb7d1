"""encode_chat: ids equal the tokenizer's, the loss mask covers exactly the assistant outputs."""

import pytest

from jaxrepair.envs import chat

from .conversations import CASES, TOOLS, assistant_outputs_from_text


def _runs(ids, mask):
    runs, cur = [], []
    for i, m in zip(ids, mask, strict=True):
        if m:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


@pytest.mark.parametrize("which", ["tiny", "qwen3"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("keep", [None, True, False])
def test_mask_covers_assistant_outputs_only(request, hf_tiny, which, case, keep):
    tok = request.getfixturevalue("tiny_tok" if which == "tiny" else "qwen_tok")
    hf = request.getfixturevalue("hf_tiny" if which == "tiny" else "hf_qwen")
    msgs = CASES[case]
    ids, mask = chat.encode_chat(msgs, tok, tools=TOOLS, keep_thinking=keep)
    text = chat.render(msgs, tools=TOOLS, keep_thinking=keep)
    if keep is None:  # the text transformers renders with Qwen3's template
        assert text == hf_tiny.apply_chat_template(msgs, tools=TOOLS, tokenize=False)
    # ids are the plain tokenization of the rendered text (transformers agrees)
    assert ids == tok.encode(text)
    assert ids == hf(text, add_special_tokens=False)["input_ids"]
    assert len(mask) == len(ids) and set(mask) <= {0, 1}

    expected = assistant_outputs_from_text(text)
    assert len(expected) == sum(m["role"] == "assistant" for m in msgs)
    runs = _runs(ids, mask)
    assert [tok.decode(r) for r in runs] == expected
    # each run ends with the end-of-turn token and is preceded by the unmasked header
    for r in runs:
        assert r[-1] == tok.im_end_id
    unmasked = tok.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    assert unmasked.count("<|im_start|>assistant\n") == len(expected)
    for m in msgs:  # every system/user/tool text is outside the mask
        if m["role"] != "assistant":
            assert m["content"] in unmasked


def test_generation_prompt_is_not_trained(tiny_tok):
    msgs = CASES["agent"][:2]
    for thinking in (True, False):
        ids, mask = chat.encode_chat(
            msgs, tiny_tok, add_generation_prompt=True, enable_thinking=thinking
        )
        assert sum(mask) == 0
        assert tiny_tok.decode(ids).endswith(
            "<|im_start|>assistant\n" + ("" if thinking else "<think>\n\n</think>\n\n")
        )


def test_encode_prompt_is_the_prefix_of_the_next_turn(tiny_tok, hf_tiny):
    msgs = CASES["agent"]
    for k in range(1, len(msgs)):
        if msgs[k]["role"] != "assistant":
            continue
        prompt = chat.encode_prompt(msgs[:k], tiny_tok, tools=TOOLS)
        want = hf_tiny.apply_chat_template(
            msgs[:k], tools=TOOLS, tokenize=False, add_generation_prompt=True
        )
        assert tiny_tok.decode(prompt) == want
        # the prompt is a token prefix of the conversation including the next assistant turn
        ids, mask = chat.encode_chat(msgs[: k + 1], tiny_tok, tools=TOOLS)
        n = len(prompt)
        assert ids[:n] == prompt
        # the new turn is trained from right there up to <|im_end|>, not the newline after it
        assert mask[n - 1] == 0 and all(mask[n:-1]) and mask[-1] == 0


def test_encode_chat_accepts_a_spec(tiny_tok):
    msgs = CASES["no_system"]
    assert chat.encode_chat(msgs, "tiny") == chat.encode_chat(msgs, tiny_tok)

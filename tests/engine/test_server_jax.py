"""The server over our `JaxEngine` (what `jaxrepair serve` runs), against `generate`: the
tool-call conversation, greedy tokens and log-probs, a seeded group (choice i of seed s is
row i of `generate(rng=s)`), concurrent requests, and the prefix cache in the usage.
Slow tier: the default suite covers the server with the static engine and runs this engine
once through `jaxrepair serve` (test_server.py)."""

from __future__ import annotations

import json
import threading

import numpy as np
import openai
import pytest

from jaxrepair.engine.jax_engine import EngineConfig, JaxEngine
from jaxrepair.engine.server import OpenAIServer
from jaxrepair.envs.chat import encode_prompt
from jaxrepair.envs.teacher import TeacherClient, to_openai_messages
from jaxrepair.model.sampler import generate
from tests.engine.static_engine import ANSWER, CALL, THINKING, TOOLS, conversation, tool_model
from tests.engine.test_server import CONTEXT, MODEL, NEW, _oracle, _prompt_ids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    return tool_model()


@pytest.fixture(scope="module")
def server(model):
    engine = JaxEngine(model.params, model.cfg, EngineConfig(slots=4, max_seq_len=CONTEXT))
    srv = OpenAIServer(engine, model.tokenizer, model_name=MODEL).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)


def test_tool_call_conversation_reuses_the_first_turn(server, client, model):
    teacher = TeacherClient(base_url=server.url, model=MODEL, max_tokens=64, retries=0)
    msg = teacher.complete(conversation(1), TOOLS)
    assert msg["reasoning_content"] == THINKING
    assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == CALL.arguments
    r = client.chat.completions.create(
        model=MODEL,
        messages=to_openai_messages(conversation(2)),
        tools=TOOLS,
        max_tokens=NEW,
        temperature=0,
    )
    assert r.choices[0].message.content == ANSWER
    turn1 = encode_prompt(conversation(1), model.tokenizer, tools=TOOLS)
    assert r.usage.prompt_tokens_details.cached_tokens == len(turn1)  # only turn 2 prefilled


def test_greedy_chat_and_completions_equal_generate(client, model):
    messages = [{"role": "user", "content": "Please say something about the build. " * 14}]
    tokens, logprobs, text = _oracle(model, encode_prompt(messages, model.tokenizer), NEW)
    r = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=NEW, temperature=0, logprobs=True
    )
    assert r.choices[0].message.content == text.strip()
    got = [t.logprob for t in r.choices[0].logprobs.content]
    np.testing.assert_allclose(got, logprobs, atol=1e-4)
    ids = _prompt_ids(0)
    r = client.completions.create(model=MODEL, prompt=ids, max_tokens=NEW, temperature=0)
    assert r.choices[0].text == _oracle(model, ids, NEW)[2]


def test_a_seeded_group_is_generates_rows(client, model):
    tok = model.tokenizer
    ids = _prompt_ids(1)
    kw = dict(temperature=0.8, top_p=0.9, top_k=20)
    r = client.completions.create(
        model=MODEL, prompt=ids, max_tokens=NEW, n=3, seed=7, extra_body={"top_k": 20},
        temperature=0.8, top_p=0.9,
    )  # fmt: skip
    out = generate(model.params, model.cfg, [ids] * 3, NEW, rng=7, stop_tokens=tok.stop_ids, **kw)
    want = [
        tok.decode([t for t in row if t not in tok.stop_ids], skip_special_tokens=True)
        for row in out.completions()
    ]
    assert [c.text for c in r.choices] == want


def test_concurrent_requests(client, model):
    results: dict[int, str] = {}

    def ask(seed: int) -> None:
        r = client.completions.create(
            model=MODEL, prompt=_prompt_ids(10 + seed), max_tokens=NEW, temperature=0
        )
        results[seed] = r.choices[0].text

    threads = [threading.Thread(target=ask, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results == {s: _oracle(model, _prompt_ids(10 + s), NEW)[2] for s in range(4)}

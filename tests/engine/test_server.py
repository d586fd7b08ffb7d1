"""`jaxrepair.engine.server` on loopback, checked against oracles it shares no code with:
the static sampler `generate` (tokens, log-probs), transformers' Qwen3 chat template (the
prompt the server builds), the project's teacher client and the `openai` package (the
protocol), and a tiny model whose greedy reply is a tool call (the tool-call path)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import jax
import numpy as np
import openai
import pytest

from jaxrepair import cli
from jaxrepair.engine.openai_schema import chat_view
from jaxrepair.engine.server import OpenAIServer, engine_factory, load_model
from jaxrepair.envs.chat import encode_prompt, format_tool_call, parse_assistant
from jaxrepair.envs.teacher import TeacherClient, reply_to_text, to_openai_messages
from jaxrepair.errors import UserError
from jaxrepair.model.hf import save_hf
from jaxrepair.model.sampler import generate, row_keys
from jaxrepair.train.checkpoint import import_hf
from tests.engine.static_engine import (
    ANSWER,
    CALL,
    THINKING,
    TOOLS,
    StaticEngine,
    conversation,
    from_served_model,
    tool_model,
)

MODEL = "tiny-tools"
CONTEXT = 512
NEW = 40  # completion tokens per test request
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    return tool_model()


@pytest.fixture(scope="module")
def engine(model):
    return StaticEngine(model.params, model.cfg, max_seq_len=CONTEXT)


@pytest.fixture(scope="module")
def server(model, engine):
    srv = OpenAIServer(engine, model.tokenizer, model_name=MODEL).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def _oracle(model, prompt, max_new, **sampling):
    """`generate`'s completion (tokens, log-probs) and its text as the server should show it."""
    tok = model.tokenizer
    sampling.setdefault("temperature", 0.0)
    out = generate(model.params, model.cfg, [prompt], max_new, stop_tokens=tok.stop_ids, **sampling)
    tokens, logprobs = out.completions()[0], out.logprobs[0, : out.lengths[0]].tolist()
    shown = tokens[:-1] if tokens and tokens[-1] in tok.stop_ids else tokens
    return tokens, logprobs, tok.decode(shown, skip_special_tokens=True)


def _prompt_ids(seed: int, n: int = 300) -> list[int]:
    return np.random.default_rng(seed).integers(0, 480, n).tolist()  # below the special ids


# --------------------------------------------------------------------------- tool calls
def test_teacher_client_drives_a_tool_call_conversation(server, engine, model):
    """Turn 1: the model's generated <think> + <tool_call> comes back as reasoning_content
    and an OpenAI tool call; turn 2 (the call's result sent back) gets the final answer.
    The prompts are what transformers' Qwen3 template makes of the teacher's messages."""
    tok = model.tokenizer
    hf = tok.to_transformers()
    teacher = TeacherClient(base_url=server.url, model=MODEL, max_tokens=64, retries=0)

    msg = teacher.complete(conversation(1), TOOLS)
    want = hf.apply_chat_template(
        to_openai_messages(conversation(1)), tools=TOOLS, add_generation_prompt=True, tokenize=False
    )
    assert engine.added[-1].prompt == tuple(tok.encode(want))
    assert msg["content"] is None and msg["reasoning_content"] == THINKING
    [call] = msg["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == CALL.name
    assert json.loads(call["function"]["arguments"]) == CALL.arguments
    assert reply_to_text(msg) == format_tool_call(CALL)  # what the policy itself writes

    msg = teacher.complete(conversation(2), TOOLS)
    want = hf.apply_chat_template(
        to_openai_messages(conversation(2)), tools=TOOLS, add_generation_prompt=True, tokenize=False
    )
    assert engine.added[-1].prompt == tuple(tok.encode(want))
    assert msg["content"] == ANSWER and not msg.get("tool_calls")


def test_openai_streams_tool_calls_for_each_choice_of_a_group(client, engine):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=to_openai_messages(conversation(1)),
        tools=TOOLS,
        max_tokens=64,
        temperature=0,
        n=2,
        stream=True,
    )
    got = {i: {"reasoning": "", "content": "", "calls": [], "finish": None} for i in (0, 1)}
    for chunk in stream:
        for ch in chunk.choices:
            g = got[ch.index]
            g["reasoning"] += (ch.delta.model_extra or {}).get("reasoning_content") or ""
            g["content"] += ch.delta.content or ""
            g["calls"] += ch.delta.tool_calls or []
            g["finish"] = ch.finish_reason or g["finish"]
    group = engine.added[-2:]
    assert group[0].prompt == group[1].prompt  # the n choices went in together
    for g in got.values():
        assert (g["reasoning"], g["content"], g["finish"]) == (THINKING, "", "tool_calls")
        [call] = g["calls"]
        assert call.function.name == CALL.name
        assert json.loads(call.function.arguments) == CALL.arguments


# ------------------------------------------------------------------ tokens equal generate
def test_openai_chat_equals_generate_streamed_or_not(client, model):
    # (prompts of 257-512 tokens and <= 64 new tokens share one compiled sampler program)
    messages = [{"role": "user", "content": "Please say something about the build. " * 14}]
    prompt = encode_prompt(messages, model.tokenizer)
    tokens, logprobs, text = _oracle(model, prompt, NEW)
    assert not text.startswith("<think>")  # premise: the whole reply is content
    finish = "stop" if tokens[-1] in model.tokenizer.stop_ids else "length"
    kw = dict(model=MODEL, messages=messages, max_tokens=NEW, temperature=0, logprobs=True)

    r = client.chat.completions.create(**kw)
    [choice] = r.choices
    assert choice.message.content == text.strip() and choice.finish_reason == finish
    assert [t.logprob for t in choice.logprobs.content] == logprobs
    assert [t.token for t in choice.logprobs.content] == [
        model.tokenizer.decode([t]) for t in tokens
    ]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(prompt), len(tokens))
    assert r.usage.prompt_tokens_details.cached_tokens == 0  # this engine caches nothing

    content, lps, end, use = "", [], None, None
    for chunk in client.chat.completions.create(
        **kw, stream=True, stream_options={"include_usage": True}
    ):
        use = chunk.usage or use
        for ch in chunk.choices:
            content += ch.delta.content or ""
            lps += [t.logprob for t in ch.logprobs.content] if ch.logprobs else []
            end = ch.finish_reason or end
    assert (content, lps, end) == (choice.message.content, logprobs, finish)
    assert use.model_dump() == r.usage.model_dump()


def test_openai_completions_equal_generate(client, model):
    tok = model.tokenizer
    ids = _prompt_ids(0)
    tokens, logprobs, text = _oracle(model, ids, NEW)
    r = client.completions.create(
        model=MODEL, prompt=ids, max_tokens=NEW, temperature=0, logprobs=0
    )
    [choice] = r.choices
    assert choice.text == text
    assert choice.logprobs.token_logprobs == logprobs
    assert choice.logprobs.tokens == [tok.decode([t]) for t in tokens]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), len(tokens))

    chunks = client.completions.create(
        model=MODEL, prompt=ids, max_tokens=NEW, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in chunks) == text
    huge_k = {"top_k": 2**62}  # keeps every token (off), never an int32 overflow in the engine
    r = client.completions.create(
        model=MODEL, prompt=ids, max_tokens=NEW, temperature=0, extra_body=huge_k
    )
    assert r.choices[0].text == text

    other = _prompt_ids(3, n=280)  # a batch of prompts: choices in prompt order
    batch = client.completions.create(
        model=MODEL, prompt=[other, ids], max_tokens=NEW, temperature=0
    )
    assert [c.text for c in batch.choices] == [_oracle(model, other, NEW)[2], text]

    words = "def main():\n    return build()\n" * 20  # text goes through the tokenizer
    r = client.completions.create(model=MODEL, prompt=words, max_tokens=NEW, temperature=0)
    assert r.choices[0].text == _oracle(model, tok.encode(words), NEW)[2]


def test_sampling_settings_seeds_and_groups(client, model, engine):
    ids = _prompt_ids(1)
    kw = dict(model=MODEL, prompt=ids, max_tokens=NEW, temperature=0.8, top_p=0.9, seed=7)
    r = client.completions.create(**kw, n=3, extra_body={"top_k": 20})
    group = engine.added[-3:]
    assert all(q.prompt == tuple(ids) for q in group)  # the n choices went in together
    rows = np.asarray(jax.random.key_data(row_keys(jax.random.key(7), 3)))
    assert [q.seed for q in group] == [tuple(r) for r in rows.tolist()]  # generate's rows
    for choice, q in zip(r.choices, group, strict=True):
        seed = np.asarray(q.seed, np.uint32) if isinstance(q.seed, tuple) else q.seed
        want = _oracle(model, ids, NEW, temperature=0.8, top_p=0.9, top_k=20, rng=seed)[2]
        assert choice.text == want
    again = client.completions.create(**kw, n=3, extra_body={"top_k": 20})
    assert [c.text for c in again.choices] == [c.text for c in r.choices]


def test_stop_strings_cut_the_text_and_the_token_count(client, model):
    tok = model.tokenizer
    ids = _prompt_ids(2)
    tokens, _, text = _oracle(model, ids, NEW)
    stop = text[5:8]
    assert len(text) > 8 and stop.strip()  # premise: there is something to stop at
    k = next(k for k in range(1, len(tokens) + 1) if stop in tok.decode(tokens[:k], True))
    kw = dict(model=MODEL, prompt=ids, max_tokens=NEW, temperature=0, stop=[stop, "\x00"])
    r = client.completions.create(**kw)
    assert r.choices[0].text == text[: text.index(stop)]
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == k
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True))
    assert streamed == r.choices[0].text


def test_concurrent_requests_join_the_running_batch(server, client, model, engine):
    """Requests that arrive while another one decodes run beside it, and each still gets
    exactly `generate`'s completion."""
    engine.max_running, engine.step_s = 0, 0.03
    results: dict[int, str] = {}

    def ask(seed: int) -> None:
        ids = _prompt_ids(10 + seed)
        r = client.completions.create(model=MODEL, prompt=ids, max_tokens=NEW, temperature=0)
        results[seed] = r.choices[0].text

    try:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=to_openai_messages(conversation(1)),
            tools=TOOLS,
            max_tokens=64,
            temperature=0,
            stream=True,
        )
        threads = [threading.Thread(target=ask, args=(s,)) for s in range(3)]
        calls = []
        for i, chunk in enumerate(stream):
            if i == 1:  # the chat request is decoding: send the others now
                for t in threads:
                    t.start()
            calls += chunk.choices[0].delta.tool_calls or [] if chunk.choices else []
        for t in threads:
            t.join(60)
    finally:
        engine.step_s = 0.0
    assert json.loads(calls[0].function.arguments) == CALL.arguments
    assert results == {s: _oracle(model, _prompt_ids(10 + s), NEW)[2] for s in range(3)}
    assert engine.max_running >= 2


# -------------------------------------------------------------------- streaming deltas
@pytest.mark.parametrize("parse_tools", [False, True])
def test_streamed_chat_views_add_up_to_the_final_reply(parse_tools):
    """For every prefix of many generated-looking replies, each view extends the previous
    one, and the last equals the final view (so streamed deltas rebuild the reply); with
    well-formed tool calls the final view is `parse_assistant`'s reading."""
    pieces = [
        "<think>", "</think>", "\n", "\n\n", " ", "Fix", "it.", "<", "</", "<tool_call>",
        "</tool_call>", '\n{"name": "run", "arguments": {"command": "ls"}}\n', "{", "é",
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(pieces, size=rng.integers(1, 12))) for _ in range(300)]
    texts.append(f"<think>\nhm\n</think>\n\nI read it.\n{format_tool_call(CALL)}")
    for text in texts:
        prev = chat_view("", final=False, parse_tools=parse_tools)
        for end in range(1, len(text) + 1):
            view = chat_view(text[:end], final=end == len(text), parse_tools=parse_tools)
            assert view.reasoning.startswith(prev.reasoning), (text, end)
            assert view.content.startswith(prev.content), (text, end)
            prev = view
        parsed = parse_assistant(text)
        if parse_tools and parsed.ok and text.startswith("<think>") and parsed.tool_calls:
            assert (prev.content, list(prev.tool_calls)) == (parsed.content, parsed.tool_calls)


# ---------------------------------------------------------------------------- bad input
def _http(server, raw: bytes) -> tuple[int, dict]:
    """Send raw bytes, read one response (status, JSON body); a hang fails by timeout."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(raw)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, json.loads(resp.read())


def _post(path: str, body: object) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


CHAT, COMP = "/v1/chat/completions", "/v1/completions"
USER = [{"role": "user", "content": "hi"}]
BAD = {
    "bad json": (_post(CHAT, b'{"model": '), 400, None),
    "not utf-8": (_post(CHAT, b'{"model": "\xff"}'), 400, None),
    "not an object": (_post(CHAT, [1, 2]), 400, None),
    "lone surrogate": (_post(CHAT, b'{"model": "x", "messages": "\\ud800"}'), 400, None),
    "legacy functions": (
        _post(CHAT, {"model": MODEL, "messages": USER, "functions": [{"name": "f"}]}),
        400,
        "functions",
    ),
    "no model": (_post(CHAT, {"messages": USER}), 400, "model"),
    "unknown model": (_post(CHAT, {"model": "gpt-4o", "messages": USER}), 404, "model"),
    "no messages": (_post(CHAT, {"model": MODEL}), 400, "messages"),
    "messages not a list": (_post(CHAT, {"model": MODEL, "messages": "hi"}), 400, "messages"),
    "empty messages": (_post(CHAT, {"model": MODEL, "messages": []}), 400, "messages"),
    "bad role": (
        _post(CHAT, {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}),
        400,
        "messages",
    ),
    "content a number": (
        _post(CHAT, {"model": MODEL, "messages": [{"role": "user", "content": 5}]}),
        400,
        "messages[0].content",
    ),
    "tool call without name": (
        _post(
            CHAT,
            {
                "model": MODEL,
                "messages": [{"role": "assistant", "tool_calls": [{"function": {}}]}],
            },
        ),
        400,
        "messages[0].tool_calls[0].function.name",
    ),
    "max_tokens a string": (
        _post(CHAT, {"model": MODEL, "messages": USER, "max_tokens": "ten"}),
        400,
        "max_tokens",
    ),
    "max_tokens zero": (
        _post(CHAT, {"model": MODEL, "messages": USER, "max_tokens": 0}),
        400,
        "max_tokens",
    ),
    "max_tokens past the context": (
        _post(CHAT, {"model": MODEL, "messages": USER, "max_tokens": CONTEXT}),
        400,
        "max_tokens",
    ),
    "negative temperature": (
        _post(CHAT, {"model": MODEL, "messages": USER, "temperature": -1}),
        400,
        "temperature",
    ),
    "top_p zero": (_post(CHAT, {"model": MODEL, "messages": USER, "top_p": 0}), 400, "top_p"),
    "n a boolean": (_post(CHAT, {"model": MODEL, "messages": USER, "n": True}), 400, "n"),
    "seed a string": (_post(CHAT, {"model": MODEL, "messages": USER, "seed": "x"}), 400, "seed"),
    "stop a number": (_post(CHAT, {"model": MODEL, "messages": USER, "stop": 5}), 400, "stop"),
    "top_logprobs": (
        _post(CHAT, {"model": MODEL, "messages": USER, "logprobs": True, "top_logprobs": 3}),
        400,
        "top_logprobs",
    ),
    "tools not a list": (
        _post(CHAT, {"model": MODEL, "messages": USER, "tools": "x"}),
        400,
        "tools",
    ),
    "tool_choice required": (
        _post(CHAT, {"model": MODEL, "messages": USER, "tools": TOOLS, "tool_choice": "required"}),
        400,
        "tool_choice",
    ),
    "no prompt": (_post(COMP, {"model": MODEL}), 400, "prompt"),
    "empty prompt": (_post(COMP, {"model": MODEL, "prompt": ""}), 400, "prompt"),
    "token id past the vocabulary": (
        _post(COMP, {"model": MODEL, "prompt": [1, 99999]}),
        400,
        "prompt",
    ),
    "negative token id": (_post(COMP, {"model": MODEL, "prompt": [[1], [-1]]}), 400, "prompt[1]"),
    "prompt of floats": (_post(COMP, {"model": MODEL, "prompt": [1.5]}), 400, "prompt"),
    "prompt past the context": (
        _post(COMP, {"model": MODEL, "prompt": [1] * CONTEXT}),
        400,
        "prompt",
    ),
    "logprobs alternatives": (
        _post(COMP, {"model": MODEL, "prompt": "a", "logprobs": 2}),
        400,
        "logprobs",
    ),
    "unknown route": (_post("/v1/embeddings", {}), 404, None),
    "wrong method": (b"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", 405, None),
    "no body": (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n", 411, None),
    "chunked body": (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        411,
        None,
    ),
    "body too large": (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
        413,
        None,
    ),
    "bad content-length": (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n",
        400,
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_requests_get_a_4xx_json_error(server, case):
    raw, status, param = BAD[case]
    got, body = _http(server, raw)
    assert got == status, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param


def test_an_engine_failure_is_a_503_not_a_hang(model):
    class Broken(StaticEngine):
        def step(self):
            raise RuntimeError("device lost")

    srv = OpenAIServer(
        Broken(model.params, model.cfg, max_seq_len=CONTEXT), model.tokenizer, model_name=MODEL
    ).start()
    try:
        body = {"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 2}
        for _ in range(2):  # the request in flight, then every later one
            status, err = _http(srv, _post(COMP, body))
            assert status == 503 and "device lost" in err["error"]["message"]
    finally:
        srv.close()


def test_models_route(server):
    with urllib.request.urlopen(server.url + "/models", timeout=10) as r:
        listing = json.load(r)
    assert [m["id"] for m in listing["data"]] == [MODEL]
    assert listing["data"][0]["max_model_len"] == CONTEXT


# ------------------------------------------------------------------------- the command
def _cli(*argv: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COORDINATOR")}
    return subprocess.Popen(
        [sys.executable, "-m", "jaxrepair.cli", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def hf_dir(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    model.tokenizer.save(root / "tok")
    return save_hf(root / "hf", model.cfg, model.params, tokenizer_from=root / "tok")


def test_load_model_reads_orbax_checkpoints_and_hf_dirs(hf_dir, tmp_path, model):
    ckpt = import_hf(hf_dir, tmp_path / "ckpt")  # params at step 0, tokenizer/ beside them
    for path, step in ((hf_dir, None), (ckpt, 0)):
        served = load_model(str(path), max_model_len=CONTEXT)
        assert served.step == step and served.max_model_len == CONTEXT
        assert served.tokenizer.fingerprint() == model.tokenizer.fingerprint()
        for k in ("embed", "lm_head"):
            np.testing.assert_array_equal(np.asarray(served.params[k]), model.params[k])
    shutil.rmtree(ckpt / "tokenizer")
    with pytest.raises(UserError, match="--tokenizer"):
        load_model(str(ckpt))
    with pytest.raises(UserError, match="--step"):
        load_model(str(hf_dir), step=3)


def test_jaxrepair_serve_as_a_subprocess(hf_dir, model):
    """`jaxrepair serve HF_DIR` (our JAX engine) prints its URL, answers the teacher's
    tool-call turn with the checkpoint's own model, prefills only the new tokens of the next
    turn (cached_tokens), and exits 0 on SIGTERM."""
    proc = _cli(
        "serve", str(hf_dir), "--port", "0", "--max-model-len", str(CONTEXT),
        "--served-model-name", MODEL, "--slots", "4",
    )  # fmt: skip
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(180)
        assert line and re.fullmatch(r"http://127\.0\.0\.1:\d+/v1\n", line[0]), (
            line,
            proc.poll() is not None and proc.stderr.read(),
        )
        url = line[0].strip()
        teacher = TeacherClient(base_url=url, model=MODEL, max_tokens=64, retries=0)
        msg = teacher.complete(conversation(1), TOOLS)
        assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == CALL.arguments
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        r = client.chat.completions.create(
            model=MODEL,
            messages=to_openai_messages(conversation(2)),
            tools=TOOLS,
            max_tokens=NEW,
            temperature=0,
        )
        assert r.choices[0].message.content == ANSWER
        turn1 = len(encode_prompt(conversation(1), model.tokenizer, tools=TOOLS))
        assert 0 < r.usage.prompt_tokens_details.cached_tokens <= turn1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_jaxrepair_serve_reports_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    assert cli.main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxrepair: error: ") and "missing" in err
    (tmp_path / "run" / "checkpoints" / "3").mkdir(parents=True)
    assert cli.main(["serve", str(tmp_path / "run"), "--engine", "nomodule"]) == 2
    assert "MODULE:CALLABLE" in capsys.readouterr().err
    assert engine_factory("tests.engine.static_engine:from_served_model") is from_served_model

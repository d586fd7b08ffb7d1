"""The OpenAI-compatible teacher client against a real HTTP server on localhost."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jaxrepair.envs.chat import parse_assistant
from jaxrepair.envs.expert import ExpertPolicy
from jaxrepair.envs.pipelines import make_episode
from jaxrepair.envs.teacher import TeacherClient, TeacherError


class Stub:
    """A scripted chat-completions server: replays the given assistant messages in order."""

    def __init__(self, replies, fail_first=0, status=500):
        self.replies = list(replies)
        self.requests = []
        self.fail_first = fail_first
        self.status = status
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if stub.fail_first > 0:
                    stub.fail_first -= 1
                    self.send_response(stub.status)
                    self.end_headers()
                    self.wfile.write(b'{"error": "busy"}')
                    return
                msg = (
                    stub.replies.pop(0)
                    if stub.replies
                    else {"role": "assistant", "content": "no more"}
                )
                data = json.dumps(
                    {"choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def openai_replies(turns):
    """Expert turns rewritten as OpenAI assistant messages (arguments as JSON strings)."""
    out = []
    for t in turns:
        p = parse_assistant(t)
        out.append(
            {
                "role": "assistant",
                "content": p.content or None,
                "tool_calls": [
                    {
                        "id": f"srv_{i}",
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                    }
                    for i, c in enumerate(p.tool_calls)
                ],
            }
        )
    return out


def test_teacher_drives_a_full_episode(tasks_by_id, sandbox):
    task = tasks_by_id["inventory-dependency-001"]
    replies = openai_replies(ExpertPolicy(task).full_turns())
    # one malformed call from the teacher first: it must come back as an error observation
    bad = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "x",
                "type": "function",
                "function": {"name": "read_file", "arguments": '{"path": '},
            }
        ],
    }
    with Stub([bad, *replies], fail_first=1) as stub:
        client = TeacherClient(base_url=stub.url, model="gpt-test", api_key="sk-test", retries=2)
        rec = client.run_episode(make_episode(task, "full", sandbox=sandbox))
    assert rec["reward"] == 1.0 and rec["outcome"] == "pass" and rec["policy"] == "teacher:gpt-test"
    assert len(stub.requests) == 1 + 1 + len(replies)  # one 500 retried, one bad call, the script
    first = stub.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    body = stub.requests[-1]["body"]
    assert body["model"] == "gpt-test" and len(body["tools"]) == 10
    msgs = body["messages"]
    assert msgs[0]["role"] == "system" and msgs[1]["role"] == "user"
    # every tool result answers a call id the assistant made just before
    ids = set()
    for m in msgs:
        if m["role"] == "assistant":
            for c in m.get("tool_calls", []):
                assert isinstance(c["function"]["arguments"], str)
                json.loads(c["function"]["arguments"])
                ids.add(c["id"])
        if m["role"] == "tool":
            assert m["tool_call_id"] in ids
    assert any(m["role"] == "user" and "malformed tool call" in m["content"] for m in msgs)


def test_teacher_errors_and_config(monkeypatch):
    with Stub([], fail_first=5, status=400) as stub:
        client = TeacherClient(base_url=stub.url, model="m", retries=3)
        with pytest.raises(TeacherError, match="HTTP 400"):
            client.complete([{"role": "user", "content": "hi"}])
        assert len(stub.requests) == 1  # client errors are not retried
    client = TeacherClient(base_url="http://127.0.0.1:9", model="m", retries=0, timeout_s=2)
    with pytest.raises(TeacherError, match="cannot reach"):
        client.complete([{"role": "user", "content": "hi"}])
    monkeypatch.delenv("JAXREPAIR_TEACHER_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="base_url"):
        TeacherClient(model="m")
    monkeypatch.setenv("JAXREPAIR_TEACHER_BASE_URL", "http://localhost:1234/v1/")
    monkeypatch.setenv("JAXREPAIR_TEACHER_MODEL", "qwen-teacher")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    c = TeacherClient()
    assert (c.base_url, c.model, c.api_key) == ("http://localhost:1234/v1", "qwen-teacher", "k")
    with pytest.raises(ValueError, match="http"):
        TeacherClient(base_url="ftp://x", model="m")

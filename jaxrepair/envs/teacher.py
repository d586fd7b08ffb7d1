"""A client for any OpenAI-compatible chat-completions endpoint that drives an episode.

Why: the paper distils a strong teacher (GPT-4.1) into the policy. Any server speaking the
OpenAI ``/chat/completions`` protocol (OpenAI, vLLM, llama.cpp, SGLang, ...) can play the
teacher here: the episode's messages and tool schemas go out, the reply's tool calls are
written back as Qwen3 ``<tool_call>`` text and stepped through the same environment the
policy uses, so teacher trajectories have exactly the policy's format. Standard library only
(urllib), no new dependency.

Configuration (arguments win over environment variables):
``base_url``  JAXREPAIR_TEACHER_BASE_URL or OPENAI_BASE_URL (e.g. https://api.openai.com/v1)
``model``     JAXREPAIR_TEACHER_MODEL
``api_key``   JAXREPAIR_TEACHER_API_KEY or OPENAI_API_KEY (optional for local servers)
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chat import ToolCall, format_tool_call
from .pipelines import make_episode

__all__ = ["TeacherClient", "TeacherError", "collect_teacher_trajectories", "to_openai_messages"]


class TeacherError(RuntimeError):
    """The endpoint could not be reached or answered something unusable."""


def to_openai_messages(messages: list[dict]) -> list[dict]:
    """Episode messages (Qwen3 roles) -> OpenAI chat messages: tool-call arguments as JSON
    strings with ids, tool results tied to their call ids, stray tool errors as user text."""
    out: list[dict] = []
    for m in messages:
        role = m["role"]
        if role == "assistant":
            msg: dict = {"role": "assistant", "content": m.get("content") or ""}
            calls = []
            for i, c in enumerate(m.get("tool_calls") or []):
                fn = c.get("function", c)
                args = fn.get("arguments", {})
                calls.append(
                    {
                        "id": c.get("id") or f"call_{len(out)}_{i}",
                        "type": "function",
                        "function": {
                            "name": fn["name"],
                            "arguments": args if isinstance(args, str) else json.dumps(args),
                        },
                    }
                )
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
        elif role == "tool":
            if m.get("tool_call_id"):
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": m["tool_call_id"],
                        "content": m.get("content", ""),
                    }
                )
            else:
                out.append({"role": "user", "content": m.get("content", "")})
        else:
            out.append({"role": role, "content": m.get("content", "")})
    return out


def reply_to_text(message: dict) -> str:
    """An OpenAI assistant message -> the Qwen3 text the policy would have written."""
    parts = []
    content = message.get("content")
    if isinstance(content, str) and content.strip():
        parts.append(content.strip())
    for c in message.get("tool_calls") or []:
        fn = c.get("function") or {}
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                # keep the teacher's broken JSON verbatim: the environment reports it
                parts.append(
                    '<tool_call>\n{"name": '
                    + json.dumps(fn.get("name", ""))
                    + ', "arguments": '
                    + args
                    + "}\n</tool_call>"
                )
                continue
        parts.append(format_tool_call(ToolCall(str(fn.get("name", "")), args)))
    return "\n".join(parts)


@dataclass
class TeacherClient:
    """Chat-completions client; ``run_episode`` plays one episode with the teacher."""

    base_url: str = ""
    model: str = ""
    api_key: str | None = None
    temperature: float = 0.0
    max_tokens: int = 2048
    timeout_s: float = 120.0
    retries: int = 2
    extra_body: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        env = os.environ
        self.base_url = (
            self.base_url
            or env.get("JAXREPAIR_TEACHER_BASE_URL")
            or env.get("OPENAI_BASE_URL")
            or ""
        ).rstrip("/")
        self.model = self.model or env.get("JAXREPAIR_TEACHER_MODEL", "")
        if self.api_key is None:
            self.api_key = env.get("JAXREPAIR_TEACHER_API_KEY") or env.get("OPENAI_API_KEY")
        if not self.base_url:
            raise ValueError(
                "teacher base_url is not set (argument, JAXREPAIR_TEACHER_BASE_URL or OPENAI_BASE_URL)"
            )
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"teacher base_url must start with http:// or https://, got {self.base_url!r}"
            )
        if not self.model:
            raise ValueError("teacher model is not set (argument or JAXREPAIR_TEACHER_MODEL)")

    def complete(self, messages: list[dict], tools: list[dict] | None = None) -> dict:
        """POST /chat/completions; returns the first choice's message."""
        body: dict = {
            "model": self.model,
            "messages": to_openai_messages(messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **self.extra_body,
        }
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(1 + self.retries):
            req = urllib.request.Request(
                f"{self.base_url}/chat/completions", data=data, headers=headers, method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    payload = json.loads(resp.read().decode())
                break
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")[:500]
                last = TeacherError(
                    f"{self.base_url}/chat/completions answered HTTP {e.code}: {detail}"
                )
                if e.code < 500 and e.code != 429:
                    raise last from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = TeacherError(f"cannot reach {self.base_url}/chat/completions: {e}")
            except json.JSONDecodeError as e:
                raise TeacherError(
                    f"{self.base_url}/chat/completions did not return JSON: {e}"
                ) from None
            time.sleep(min(8.0, 0.5 * 2**attempt))
        else:
            assert last is not None
            raise last
        try:
            return payload["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise TeacherError(
                f"unexpected response (no choices[0].message): {str(payload)[:300]}"
            ) from None

    def run_episode(self, episode: Any) -> dict:
        """Drive ``episode`` (a fresh one from make_episode) to the end; its trajectory."""
        episode.reset()
        done, info = False, {}
        tools = episode.tools
        while not done:
            msg = self.complete(episode.messages, tools)
            _, _, done, info = episode.step(reply_to_text(msg))
        rec = episode.trajectory()
        rec["policy"] = f"teacher:{self.model}"
        return rec


def collect_teacher_trajectories(
    tasks: list[Any],
    client: TeacherClient,
    pipeline: str = "full",
    sandbox: Any = None,
    out_jsonl: str | Path | None = None,
    **caps: Any,
) -> list[dict]:
    """Run the teacher on every task; one JSONL trajectory per task."""
    from .expert import _json_default

    records = []
    fh = open(out_jsonl, "w") if out_jsonl is not None else None  # noqa: SIM115
    try:
        for task in tasks:
            ep = make_episode(task, pipeline, sandbox=sandbox, **caps)
            rec = client.run_episode(ep)
            records.append(rec)
            if fh is not None:
                fh.write(json.dumps(rec, default=_json_default) + "\n")
                fh.flush()
    finally:
        if fh is not None:
            fh.close()
    return records

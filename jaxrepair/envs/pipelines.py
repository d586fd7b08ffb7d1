"""Episodes in the two pipelines of the paper, Gymnasium style (``reset`` / ``step``).

Why: the same task is solved two ways. The *full* pipeline is multi-turn: the model calls
tools (Qwen3 ``<tool_call>`` blocks) until it submits or hits the step or context cap. The
*simplified* pipeline is one shot from a cached state (issue, error log, relevant files up
front); the model answers once with edits in the format below, and the reward is computed at
once. Both record the conversation as Qwen3 chat messages (system, user, assistant, tool) so
an episode can be written as a trajectory.

Simplified answer format (any number of blocks, in any order; text outside them is ignored)::

    <file path="src/pkg/mod.py">
    ...the complete new content of the file...
    </file>

    <edit path="src/pkg/mod.py">
    <<<<<<< SEARCH
    exact lines to find (must occur exactly once)
    =======
    replacement lines
    >>>>>>> REPLACE
    </edit>

    <dependency name="slugkit" version="1.0.0"/>

Paths are relative to the repository root and confined to it exactly like the tools' paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chat import parse_assistant
from .tools import TOOL_NAMES, TOOL_SCHEMAS, ToolBox, validate_now

__all__ = [
    "SIMPLIFIED_FORMAT",
    "Edit",
    "Episode",
    "FullEpisode",
    "SimplifiedEpisode",
    "make_episode",
    "parse_edits",
]

DEFAULT_MAX_STEPS = 30
DEFAULT_MAX_CONTEXT_TOKENS = 32_768
MAX_RELEVANT_CHARS = 24_000  # file contents shown up front in the simplified pipeline

SYSTEM_FULL = (
    "You are an expert software engineer. You repair a repository whose build fails. "
    "Work only through the tools: inspect files, edit them, change dependency pins if the "
    "code and the pinned versions disagree, run validate_and_build to check your fix, and "
    "call submit when the build passes. Do not modify or delete tests, test runners or "
    "build validation scripts: such changes are rejected."
)
SYSTEM_SIMPLIFIED = (
    "You are an expert software engineer. You repair a repository whose build fails. "
    "You get the error report and the relevant files; answer once with the edits that make "
    "the build pass. Do not modify tests or build validation scripts."
)
SIMPLIFIED_FORMAT = """Answer with edits in this format (text outside the blocks is ignored):

To replace a whole file:
<file path="path/to/file">
complete new file content
</file>

To change part of a file (the SEARCH text must occur exactly once in the file):
<edit path="path/to/file">
<<<<<<< SEARCH
exact existing lines
=======
new lines
>>>>>>> REPLACE
</edit>

To pin a dependency to another available version:
<dependency name="package" version="x.y.z"/>"""


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters per token) for the context cap."""
    return (len(text) + 3) // 4


# ----------------------------------------------------------------------------- base


class Episode:
    """Common state: task, sandbox, workspace, messages, result."""

    pipeline = "?"

    def __init__(
        self,
        task: Any,
        sandbox: Any = None,
        count_tokens: Callable[[str], int] | None = None,
        validation_cache: Any = None,
    ) -> None:
        self.validation_cache = validation_cache
        if sandbox is None:
            from .reward import default_sandbox

            sandbox = default_sandbox()
        self.task = task
        self.sandbox = sandbox
        self.count_tokens = count_tokens or approx_tokens
        self.messages: list[dict] = []
        self.tools: list[dict] | None = None
        self.workspace: Path | None = None
        self.toolbox: ToolBox | None = None
        self.done = False
        self.reward = 0.0
        self.validation: Any = None
        self.steps = 0
        self.end_reason: str | None = None

    def _fresh_workspace(self) -> None:
        self.close()
        self.workspace = Path(self.sandbox.create_workspace(self.task))
        self.toolbox = ToolBox(
            self.task,
            self.workspace,
            self.sandbox,
            initial_log=_issue_log(self.task),
            validation_cache=self.validation_cache,
        )

    def close(self) -> None:
        """Remove the workspace (idempotent)."""
        if self.workspace is not None:
            try:
                self.sandbox.destroy_workspace(self.workspace)
            finally:
                self.workspace = None

    def __del__(self) -> None:  # best effort: never leak temp dirs
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def _finish(self, reason: str) -> None:
        assert self.workspace is not None
        self.validation = validate_now(
            self.task, self.workspace, self.sandbox, self.validation_cache
        )
        self.reward = float(self.validation.reward)
        self.done = True
        self.end_reason = reason
        self.close()

    def info(self, **extra: Any) -> dict:
        v = self.validation
        out = {
            "task_id": self.task.id,
            "pipeline": self.pipeline,
            "steps": self.steps,
            "tool_calls": list(self.toolbox.calls) if self.toolbox else [],
            "end_reason": self.end_reason,
        }
        if v is not None:
            out.update(outcome=v.outcome, tampered=v.tampered, guard=v.guard, validation=v)
        out.update(extra)
        return out

    def context_tokens(self) -> int:
        from .chat import render

        return self.count_tokens(render(self.messages, self.tools))

    def trajectory(self) -> dict:
        """The episode as one JSONL record (the trajectory JSONL format)."""
        v = self.validation
        return {
            "task_id": self.task.id,
            "pipeline": self.pipeline,
            "category": getattr(self.task, "category", None),
            "split": getattr(self.task, "split", None),
            "messages": self.messages,
            "tools": self.tools,
            "reward": self.reward,
            "outcome": v.outcome if v is not None else None,
            "guard": v.guard if v is not None else None,
            "validation_log_tail": (v.log[-4000:] if v is not None else ""),
            "fingerprint": v.fingerprint if v is not None else None,
            "steps": self.steps,
            "end_reason": self.end_reason,
        }


def _issue_log(task: Any) -> str:
    m = re.search(r"```\n(.*?)```", task.issue, re.S)
    return m.group(1) if m else task.issue


# ----------------------------------------------------------------------------- full


class FullEpisode(Episode):
    """Multi-turn tool use until ``submit``, the step cap or the context cap."""

    pipeline = "full"

    def __init__(
        self,
        task: Any,
        sandbox: Any = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
        count_tokens: Callable[[str], int] | None = None,
        validation_cache: Any = None,
    ) -> None:
        super().__init__(task, sandbox, count_tokens, validation_cache)
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if max_context_tokens < 1:
            raise ValueError(f"max_context_tokens must be positive, got {max_context_tokens}")
        self.max_steps = max_steps
        self.max_context_tokens = max_context_tokens
        self.tools = TOOL_SCHEMAS

    def first_observation(self) -> str:
        return (
            f"The build of this repository fails. Error report:\n\n{self.task.issue}\n"
            f"Fix the repository so that the build (`{' && '.join(self.task.build)}`) passes. "
            f"Use the tools ({', '.join(TOOL_NAMES)}); call validate_and_build to check your "
            "fix and submit when it passes."
        )

    def reset(self) -> str:
        self._fresh_workspace()
        self.done, self.reward, self.validation, self.steps, self.end_reason = (
            False,
            0.0,
            None,
            0,
            None,
        )
        obs = self.first_observation()
        self.messages = [
            {"role": "system", "content": SYSTEM_FULL},
            {"role": "user", "content": obs},
        ]
        return obs

    def step(self, assistant_text: str) -> tuple[str, float, bool, dict]:
        if self.toolbox is None and not self.done:
            raise RuntimeError("call reset() before step()")
        if self.done:
            return "the episode is over; call reset()", 0.0, True, self.info()
        self.steps += 1
        parsed = parse_assistant(assistant_text if isinstance(assistant_text, str) else "")
        msg = parsed.to_message()
        for i, call in enumerate(msg.get("tool_calls", [])):
            call["id"] = f"call_{self.steps}_{i}"
        self.messages.append(msg)
        observations: list[str] = []
        if not isinstance(assistant_text, str):
            parsed.errors.insert(
                0, f"assistant output must be text, got {type(assistant_text).__name__}"
            )
        for err in parsed.errors:
            text = f"error: malformed tool call: {err}"
            observations.append(text)
            self.messages.append({"role": "tool", "content": text})
        submitted = False
        for i, call in enumerate(parsed.tool_calls):
            out = self.toolbox.call(call.name, call.arguments)
            observations.append(out)
            self.messages.append(
                {
                    "role": "tool",
                    "name": call.name,
                    "tool_call_id": f"call_{self.steps}_{i}",
                    "content": out,
                }
            )
            if self.toolbox.submitted:
                submitted = True
                break
        if not parsed.tool_calls and not parsed.errors:
            text = (
                "No tool call found in your reply. Call a tool inside <tool_call>...</tool_call> "
                '(JSON with "name" and "arguments"); call submit when the build passes.'
            )
            observations.append(text)
            self.messages.append({"role": "user", "content": text})
        obs = "\n\n".join(observations)
        reason = None
        if submitted:
            reason = "submit"
        elif self.steps >= self.max_steps:
            reason = "max_steps"
        elif self.context_tokens() >= self.max_context_tokens:
            reason = "max_context_tokens"
        if reason is not None:
            self._finish(reason)
            return obs, self.reward, True, self.info()
        return obs, 0.0, False, self.info()


# ----------------------------------------------------------------------------- simplified


@dataclass
class Edit:
    """One parsed edit of a simplified answer."""

    kind: str  # "file" | "replace" | "dependency"
    path: str = ""
    content: str = ""  # file: full content; replace: the SEARCH text
    replacement: str = ""
    name: str = ""
    version: str = ""


_FILE_RE = re.compile(r'<file\s+path\s*=\s*"([^"]*)"\s*>\n?(.*?)</file>', re.S)
_EDIT_RE = re.compile(r'<edit\s+path\s*=\s*"([^"]*)"\s*>(.*?)</edit>', re.S)
_SR_RE = re.compile(r"<<<<<<< SEARCH\n(.*?)\n?=======\n(.*?)\n?>>>>>>> REPLACE", re.S)
_DEP_RE = re.compile(r'<dependency\s+name\s*=\s*"([^"]*)"\s+version\s*=\s*"([^"]*)"\s*/?>')


def parse_edits(text: str) -> tuple[list[Edit], list[str]]:
    """Edits of a simplified answer, in order of appearance, and format errors."""
    found: list[tuple[int, Edit]] = []
    errors: list[str] = []
    for m in _FILE_RE.finditer(text):
        found.append((m.start(), Edit("file", path=m.group(1), content=m.group(2))))
    for m in _EDIT_RE.finditer(text):
        blocks = list(_SR_RE.finditer(m.group(2)))
        if not blocks:
            errors.append(
                f'<edit path="{m.group(1)}"> has no <<<<<<< SEARCH / ======= / >>>>>>> REPLACE block'
            )
        for b in blocks:
            search, repl = b.group(1), b.group(2)
            found.append(
                (
                    m.start() + b.start(),
                    Edit("replace", path=m.group(1), content=search, replacement=repl),
                )
            )
    for m in _DEP_RE.finditer(text):
        found.append((m.start(), Edit("dependency", name=m.group(1), version=m.group(2))))
    opened = len(re.findall(r"<file\s", text)) + len(re.findall(r"<edit\s", text))
    closed = len(_FILE_RE.findall(text)) + len(_EDIT_RE.findall(text))
    if opened > closed:
        errors.append(f"{opened - closed} <file>/<edit> block(s) are not closed")
    return [e for _, e in sorted(found, key=lambda x: x[0])], errors


class SimplifiedEpisode(Episode):
    """One shot: the cached prompt, one answer with edits, an immediate reward."""

    pipeline = "simplified"
    _prompt_cache: dict[tuple[str, str], str] = {}

    def __init__(
        self,
        task: Any,
        sandbox: Any = None,
        count_tokens: Callable[[str], int] | None = None,
        validation_cache: Any = None,
        **_caps: Any,
    ) -> None:
        super().__init__(task, sandbox, count_tokens, validation_cache)

    def prompt(self) -> str:
        """The cached state: issue, error log and the relevant files (with current pins)."""
        from .reward import task_hash

        key = (self.task.id, task_hash(self.task))
        if key in self._prompt_cache:
            return self._prompt_cache[key]
        parts = [
            f"The build of this repository fails (`{' && '.join(self.task.build)}`).\n\n{self.task.issue}"
        ]
        repo = self.task.repo_dir
        budget = MAX_RELEVANT_CHARS
        shown = []
        for rel in self.task.relevant_files:
            p = repo / rel
            if not p.is_file() or p.is_symlink():
                continue
            text = p.read_text(errors="replace")
            if len(text) > budget:
                continue
            budget -= len(text)
            shown.append(f'<file path="{rel}">\n{text}</file>')
        if shown:
            parts.append("Relevant files:\n\n" + "\n\n".join(shown))
        if self.task.build_system == "python":
            from . import deps

            try:
                pins = deps.read_pins(repo)
            except deps.DepsError:
                pins = {}
            if pins:
                lines = [
                    f"- {n}: pinned {v}; available: {', '.join(deps.available_versions(n)) or 'none'}"
                    for n, v in pins.items()
                ]
                parts.append("Dependencies (requirements.txt):\n" + "\n".join(lines))
        parts.append(SIMPLIFIED_FORMAT)
        text = "\n\n".join(parts)
        self._prompt_cache[key] = text
        return text

    def reset(self) -> str:
        self.close()
        self.done, self.reward, self.validation, self.steps, self.end_reason = (
            False,
            0.0,
            None,
            0,
            None,
        )
        self.toolbox = None
        obs = self.prompt()
        self.messages = [
            {"role": "system", "content": SYSTEM_SIMPLIFIED},
            {"role": "user", "content": obs},
        ]
        return obs

    def step(self, assistant_text: str) -> tuple[str, float, bool, dict]:
        if not self.messages:
            raise RuntimeError("call reset() before step()")
        if self.done:
            return "the episode is over; call reset()", 0.0, True, self.info()
        self.steps = 1
        text = assistant_text if isinstance(assistant_text, str) else ""
        parsed = parse_assistant(text)
        msg: dict = {"role": "assistant", "content": parsed.content}
        if parsed.thinking is not None:
            msg["reasoning_content"] = parsed.thinking
        self.messages.append(msg)
        edits, errors = parse_edits(parsed.content)
        if not isinstance(assistant_text, str):
            errors.insert(0, f"assistant output must be text, got {type(assistant_text).__name__}")
        self._fresh_workspace()
        results = []
        for e in edits:
            if e.kind == "file":
                out = self.toolbox.call("write_file", {"path": e.path, "content": e.content})
            elif e.kind == "replace":
                out = self.toolbox.call(
                    "edit_file", {"path": e.path, "old_text": e.content, "new_text": e.replacement}
                )
            else:
                out = self.toolbox.call(
                    "dependency_upgrade", {"name": e.name, "version": e.version}
                )
            results.append(out)
            if out.startswith("error:"):
                errors.append(out[len("error: ") :])
        self._finish("answer")
        v = self.validation
        obs = f"build {'passed' if v.outcome == 'pass' else 'failed'}; reward {self.reward:g}"
        if errors:
            obs += "\nproblems with the answer:\n" + "\n".join(f"- {e}" for e in errors)
        return (
            obs,
            self.reward,
            True,
            self.info(edits=len(edits), edit_errors=errors, edit_results=results),
        )


def make_episode(
    task: Any,
    pipeline: str = "full",
    sandbox: Any = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
    count_tokens: Callable[[str], int] | None = None,
    validation_cache: Any = None,
) -> Episode:
    """An episode of ``task`` in the ``"full"`` or ``"simplified"`` pipeline.

    ``validation_cache`` (a ``validation_cache.ValidationCache``) shares build results
    between episodes that end in identical workspaces."""
    if pipeline == "full":
        return FullEpisode(
            task,
            sandbox,
            max_steps=max_steps,
            max_context_tokens=max_context_tokens,
            count_tokens=count_tokens,
            validation_cache=validation_cache,
        )
    if pipeline == "simplified":
        return SimplifiedEpisode(
            task, sandbox, count_tokens=count_tokens, validation_cache=validation_cache
        )
    raise ValueError(f"unknown pipeline {pipeline!r}; expected 'full' or 'simplified'")

"""A small deterministic set of agent trajectories (DESIGN.md JSONL format) and a tokenizer for it."""

from __future__ import annotations

import json
from pathlib import Path

PACKAGES = ["slugkit", "unitconv", "confparse", "textwrap3", "mathx", "colorfmt", "pathy", "tomlet"]
ERRORS = [
    "ImportError: cannot import name 'slugify' from 'slugkit'",
    "TypeError: convert() missing 1 required positional argument: 'unit'",
    "KeyError: 'section' while parsing setup.cfg",
    "AttributeError: module 'textwrap3' has no attribute 'fill'",
    "SyntaxError: invalid syntax in src/mathx/core.py line 12",
    "ModuleNotFoundError: No module named 'colorfmt.rgb'",
    "AssertionError: test_join expected 'a/b' got 'a\\\\b'",
    "ValueError: unsupported TOML version 2 in pyproject.toml",
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file in the repository.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run",
            "description": "Run a shell command in the repository.",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        },
    },
]


def trajectory(i: int) -> dict:
    pkg = PACKAGES[i % len(PACKAGES)]
    err = ERRORS[i % len(ERRORS)]
    path = f"src/{pkg}/__init__.py"
    return {
        "task_id": f"synthetic-{i:03d}",
        "pipeline": "full",
        "tools": TOOLS if i % 4 == 0 else None,
        "messages": [
            {"role": "system", "content": "You repair broken Python repositories."},
            {"role": "user", "content": f"The build fails:\n{err}\nFix the repository."},
            {
                "role": "assistant",
                "content": f"I will look at {path} first.",
                "tool_calls": [{"name": "read_file", "arguments": {"path": path}}],
            },
            {
                "role": "tool",
                "content": f"from .core import {pkg}_main\n__all__ = ['{pkg}_main']\n",
            },
            {
                "role": "assistant",
                "content": f"The export of {pkg} is wrong; I rename it and run the tests.",
                "tool_calls": [
                    {"name": "run", "arguments": {"command": f"pytest -q tests/test_{pkg}.py"}}
                ],
            },
            {"role": "tool", "content": f"{3 + i % 5} passed in 0.{i % 9 + 1}s"},
            {"role": "assistant", "content": f"Fixed: {pkg} builds and its tests pass."},
        ],
        "reward": 1.0,
        "validation_log_tail": "ok",
        "token_counts": {},
    }


def write_trajectories(path: str | Path, n: int = 8, start: int = 0) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w") as f:
        for i in range(start, start + n):
            f.write(json.dumps(trajectory(i)) + "\n")
    return p


def make_tokenizer(traj_path: str | Path | None = None, vocab_size: int = 512):
    """The small BPE tokenizer (chat's `load_tiny_tokenizer`) trained on these trajectories."""
    from jaxrepair.envs import chat
    from jaxrepair.envs.tokenizer import chat_snippets, load_tiny_tokenizer

    texts = [chat.render(trajectory(i)["messages"], tools=TOOLS) for i in range(16)]
    return load_tiny_tokenizer(corpus=texts + chat_snippets(), vocab_size=vocab_size)

"""Conversations exercising every branch of Qwen3's chat template."""

import copy

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the repository.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "Relative path."}},
                "required": ["path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_build",
            "description": "Run the build commands; returns the log tail.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]

SYSTEM = {"role": "system", "content": "You repair broken builds. Use the tools."}
ISSUE = {
    "role": "user",
    "content": "`make test` fails:\nImportError: cannot import name 'parse' from 'cfg'",
}

# The agent trajectory of the full pipeline: one user query, then assistant/tool turns.
AGENT = [
    SYSTEM,
    ISSUE,
    {
        "role": "assistant",
        "content": "<think>\nThe import fails; look at cfg first.\n</think>\n\nLet me read cfg.",
        "tool_calls": [{"name": "read_file", "arguments": {"path": "cfg/__init__.py"}}],
    },
    {"role": "tool", "content": "def parse_config(s):\n    return s.split('=')\n"},
    {
        "role": "assistant",
        "content": None,
        "reasoning_content": "Renamed to parse_config. Check the build and the caller.",
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "read_file", "arguments": {"path": "app.py"}},
            },
            {"type": "function", "function": {"name": "run_build", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "content": "from cfg import parse\n"},
    {"role": "tool", "content": "FAILED: 1 error — ümlaut ✓ 中文"},
    {
        "role": "assistant",
        "content": "The function was renamed; here is the fix.",
        "tool_calls": [{"name": "run_build", "arguments": {}}],
    },
    {"role": "tool", "content": "OK: 12 passed"},
    {"role": "assistant", "content": "Fixed: `app.py` now imports `parse_config`."},
]

# Several user queries: Qwen3 drops the reasoning of turns before the last query.
MULTI_QUERY = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4", "reasoning_content": "Simple arithmetic."},
    {"role": "user", "content": "<tool_response>\nnot a real query\n</tool_response>"},
    {"role": "assistant", "content": "<think>\nold thought\n</think>\nnoted"},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "<think>\nadd\n</think>\n\n6"},
    {"role": "system", "content": "A late system message."},
    {"role": "user", "content": "Thanks"},
    {"role": "assistant", "content": "You're welcome."},
]

NO_SYSTEM = [copy.deepcopy(ISSUE), {"role": "assistant", "content": "Sure."}]

CASES = {"agent": AGENT, "multi_query": MULTI_QUERY, "no_system": NO_SYSTEM}


def assistant_outputs_from_text(text: str) -> list[str]:
    """Independent oracle for the loss mask: each `<|im_start|>assistant\\n ... <|im_end|>`."""
    out, pos, head, end = [], 0, "<|im_start|>assistant\n", "<|im_end|>"
    while (s := text.find(head, pos)) != -1:
        e = text.find(end, s)
        if e == -1:  # a generation prompt, not an assistant output
            break
        out.append(text[s + len(head) : e + len(end)])
        pos = e + len(end)
    return out

"""An expert policy that knows each task's reference fix, and trajectory collection for SFT.

Why: supervised fine-tuning needs demonstrations in the exact format the policy will later
produce: real tool-call text in the full pipeline (read the files, edit them, build, submit)
and answers in the edit format of the simplified pipeline. The expert derives minimal edits
from ``fix.patch`` and plays them through the same episodes the model uses, so its reward is
the environment's own verdict.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import json
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .chat import ToolCall, format_tool_call
from .pipelines import make_episode

__all__ = ["ExpertPolicy", "FileChange", "collect_trajectories", "fixed_files", "minimal_edits"]

_PIN_LINE = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)$")


class FileChange:
    """One file the reference fix changes: before and after text (None = absent)."""

    def __init__(self, path: str, before: str | None, after: str | None) -> None:
        self.path, self.before, self.after = path, before, after


def fixed_files(task: Any) -> list[FileChange]:
    """Apply the task's fix.patch to a scratch copy of the repo; the changed files."""
    import shutil

    from .reward import apply_patch

    with tempfile.TemporaryDirectory(prefix="jaxrepair-expert-") as tmp:
        ws = Path(tmp) / "repo"
        shutil.copytree(task.repo_dir, ws, symlinks=True)
        apply_patch(ws, task.fix_patch)
        paths = sorted(
            set(re.findall(r"^diff --git a/(\S+) b/", task.fix_patch, re.M))
            | set(re.findall(r"^\+\+\+ b/(\S+)", task.fix_patch, re.M))
        )
        out = []
        for rel in paths:
            a, b = task.repo_dir / rel, ws / rel
            out.append(
                FileChange(
                    rel,
                    a.read_text() if a.is_file() else None,
                    b.read_text() if b.is_file() else None,
                )
            )
        return out


def minimal_edits(before: str, after: str) -> list[tuple[str, str]] | None:
    """(old_text, new_text) replacements turning ``before`` into ``after`` when applied in
    order, each old_text occurring exactly once at its turn; None if none can be found."""
    a = before.splitlines(keepends=True)
    b = after.splitlines(keepends=True)
    ops = [
        op
        for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
        if op[0] != "equal"
    ]
    edits: list[tuple[str, str]] = []
    current = list(a)
    for _tag, i1, i2, j1, j2 in reversed(ops):  # bottom-up keeps earlier indices valid
        for ctx in range(0, 8):
            lo, hi = max(0, i1 - ctx), min(len(current), i2 + ctx)
            old = "".join(current[lo:hi])
            new = "".join(current[lo:i1]) + "".join(b[j1:j2]) + "".join(current[i2:hi])
            if old and "".join(current).count(old) == 1:
                break
        else:
            return None
        edits.append((old, new))
        current[lo:hi] = new.splitlines(keepends=True)
    if "".join(current) != after:
        return None
    return list(reversed(edits)) if _applies(before, list(reversed(edits)), after) else None


def _applies(text: str, edits: list[tuple[str, str]], want: str) -> bool:
    for old, new in edits:
        if text.count(old) != 1:
            return False
        text = text.replace(old, new, 1)
    return text == want


def _pin_changes(change: FileChange) -> list[tuple[str, str]] | None:
    """If only pins changed in requirements.txt: [(name, new version)], else None."""
    if change.path != "requirements.txt" or change.before is None or change.after is None:
        return None

    def pins(text: str) -> dict[str, str]:
        out = {}
        for line in text.splitlines():
            m = _PIN_LINE.match(line.strip())
            if m:
                out[m.group(1)] = m.group(2)
            elif line.strip():
                return {"\0": line}
        return out

    pa, pb = pins(change.before), pins(change.after)
    if "\0" in pa or "\0" in pb or set(pa) != set(pb):
        return None
    return [(n, pb[n]) for n in pb if pa[n] != pb[n]]


def _call(tool: str, **arguments: Any) -> str:
    return format_tool_call(ToolCall(tool, arguments))


class ExpertPolicy:
    """Scripted replies for one task, for either pipeline."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.changes = fixed_files(task)

    # -- full pipeline ----------------------------------------------------------------------
    def full_turns(self, build_passed: bool = True) -> list[str]:
        """The assistant texts of a full-pipeline episode, in order (the last one depends on
        whether validate_and_build passed)."""
        turns = []
        to_read = [c.path for c in self.changes if c.before is not None]
        if to_read:
            reads = "\n".join(_call("read_file", path=p) for p in to_read)
            named = [p for p in to_read if p in self.task.issue]
            lead = f"The build output points at {', '.join(named)}. " if named else ""
            them = "it" if len(to_read) == 1 else "them"
            turns.append(f"{lead}Let me read {them}: {', '.join(to_read)}.\n{reads}")
        actions, notes = [], []
        listed = False
        for c in self.changes:
            pins = _pin_changes(c)
            if pins:
                if not listed:
                    listed = True
                    turns.append(
                        "The failure comes from the pinned dependency versions. Let me see which versions exist.\n"
                        + _call("list_dependency_versions")
                    )
                for name, version in pins:
                    actions.append(_call("dependency_upgrade", name=name, version=version))
                    notes.append(f"pin {name} to {version}")
                continue
            if c.after is None:
                notes.append(f"empty {c.path}")
                actions.append(_call("write_file", path=c.path, content=""))
                continue
            edits = minimal_edits(c.before, c.after) if c.before is not None else None
            if edits is None:
                actions.append(_call("write_file", path=c.path, content=c.after))
                notes.append(f"rewrite {c.path}")
            else:
                for old, new in edits:
                    actions.append(_call("edit_file", path=c.path, old_text=old, new_text=new))
                notes.append(f"fix {c.path}")
        turns.append(f"I will {', '.join(notes)}.\n" + "\n".join(actions))
        turns.append("Now let me check that the build passes.\n" + _call("validate_and_build"))
        turns.append(self.final_turn(build_passed))
        return turns

    @staticmethod
    def final_turn(build_passed: bool) -> str:
        if build_passed:
            return "The build passes. Submitting the fix.\n" + _call("submit")
        return "The build still fails; submitting the current state.\n" + _call("submit")

    # -- simplified pipeline ----------------------------------------------------------------
    def simplified_answer(self) -> str:
        """One answer in the simplified edit format."""
        blocks, notes = [], []
        for c in self.changes:
            pins = _pin_changes(c)
            if pins:
                for name, version in pins:
                    blocks.append(f'<dependency name="{name}" version="{version}"/>')
                    notes.append(f"pin {name} to {version}")
                continue
            after = c.after or ""
            edits = minimal_edits(c.before, after) if c.before is not None else None
            if edits is not None:
                stripped = [(o.removesuffix("\n"), n.removesuffix("\n")) for o, n in edits]
                if not _applies(c.before, stripped, after):
                    edits = None
            if edits is None or any(_sr_unsafe(o) or _sr_unsafe(n) for o, n in edits):
                blocks.append(f'<file path="{c.path}">\n{after}</file>')
                notes.append(f"rewrite {c.path}")
                continue
            body = "".join(
                f"<<<<<<< SEARCH\n{old.removesuffix(chr(10))}\n=======\n{new.removesuffix(chr(10))}\n>>>>>>> REPLACE\n"
                if new
                else f"<<<<<<< SEARCH\n{old.removesuffix(chr(10))}\n=======\n>>>>>>> REPLACE\n"
                for old, new in edits
            )
            blocks.append(f'<edit path="{c.path}">\n{body}</edit>')
            notes.append(f"fix {c.path}")
        return f"The fix: {', '.join(notes)}.\n\n" + "\n\n".join(blocks)


def _sr_unsafe(text: str) -> bool:
    """Text the search/replace format cannot carry exactly (markers, blank edges)."""
    return (
        any(m in text for m in ("<<<<<<<", "=======", ">>>>>>>", "</edit>"))
        or (text != "" and not text.endswith("\n"))
        or text.startswith("\n")
        or text.endswith("\n\n")
    )


def run_expert(task: Any, pipeline: str, sandbox: Any = None, **caps: Any):  # noqa: ANN201
    """Play the expert through one episode; returns the finished episode and its last info."""
    expert = ExpertPolicy(task)
    ep = make_episode(task, pipeline, sandbox=sandbox, **caps)
    ep.reset()
    info: dict = {}
    if pipeline == "simplified":
        _, _, _, info = ep.step(expert.simplified_answer())
        return ep, info
    done, obs = False, ""
    for turn in expert.full_turns()[:-1]:
        obs, _, done, info = ep.step(turn)
        if done:
            return ep, info
    # the last reply reacts to what validate_and_build reported
    _, _, done, info = ep.step(expert.final_turn(obs.startswith("build PASSED")))
    return ep, info


def _token_counter(tokenizer: Any) -> Callable[[dict], dict] | None:
    if tokenizer is None:
        return None
    from .chat import encode_chat

    def count(record: dict) -> dict:
        ids, mask = encode_chat(record["messages"], tokenizer, tools=record.get("tools"))
        return {"total": len(ids), "assistant": int(sum(mask))}

    return count


def collect_trajectories(
    tasks: Iterable[Any],
    pipeline: str = "full",
    sandbox: Any = None,
    out_jsonl: str | Path | None = None,
    tokenizer: Any = None,
    workers: int = 1,
    **caps: Any,
) -> list[dict]:
    """Run the expert on every task and write one trajectory per line to ``out_jsonl``.

    Each record: task_id, pipeline, messages (Qwen3 chat roles with tool calls), tools,
    reward, outcome, validation_log_tail, and ``token_counts`` when a tokenizer is given.
    ``workers`` > 1 runs episodes on that many threads (builds are subprocesses); records keep
    the order of ``tasks``.
    """
    counter = _token_counter(tokenizer)

    def one(task: Any) -> dict:
        ep, _info = run_expert(task, pipeline, sandbox, **caps)
        rec = ep.trajectory()
        rec["policy"] = "expert"
        if counter is not None:
            rec["token_counts"] = counter(rec)
        return rec

    records = []
    fh = open(out_jsonl, "w") if out_jsonl is not None else None  # noqa: SIM115
    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            for rec in pool.map(one, tasks):
                records.append(rec)
                if fh is not None:
                    fh.write(json.dumps(rec, default=_json_default) + "\n")
                    fh.flush()
    finally:
        if fh is not None:
            fh.close()
    return records


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)

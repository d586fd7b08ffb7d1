"""Procedural breakages of real Python source: each is one small text edit located by the AST,
recorded as a break patch with its exact inverse as the fix patch.

Why AST-located text edits rather than ``ast.unparse``: unparsing rewrites a whole file's
formatting, so the fix patch would be the whole file; an edit at the node's exact span keeps
the break (and the fix) a few lines, as a real bug and its fix are.

Categories (envs.task.CATEGORIES): ``import`` (an import removed, a module name misspelt),
``signature`` (a default dropped, a required parameter added, two parameters swapped),
``logic`` (a comparison, arithmetic or boolean operator swapped, a condition negated, an
integer constant off by one), ``type`` (a return value turned into a string or wrapped in a list), ``syntax``
(a header's colon or a call's closing parenthesis removed). Whether the tests notice is
decided later, by running them.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Iterator
from dataclasses import dataclass

from .patches import file_diff

__all__ = ["Breakage", "breakages", "interleave"]

_CMP_SWAP = {
    ast.Lt: ("<", "<="),
    ast.LtE: ("<=", "<"),
    ast.Gt: (">", ">="),
    ast.GtE: (">=", ">"),
    ast.Eq: ("==", "!="),
    ast.NotEq: ("!=", "=="),
}
_BIN_SWAP = {
    ast.Add: ("+", "-"),
    ast.Sub: ("-", "+"),
    ast.Mult: ("*", "+"),
    ast.Mod: ("%", "//"),
    ast.FloorDiv: ("//", "*"),
}
_BOOL_SWAP = {ast.And: ("and", "or"), ast.Or: ("or", "and")}


@dataclass(frozen=True)
class Breakage:
    """One edit of one file: ``original`` -> ``broken``; the fix is the exact inverse."""

    category: str
    kind: str
    path: str  # relative to the project root
    line: int
    original: str
    broken: str
    function: str = ""  # the enclosing function, when there is one

    @property
    def break_patch(self) -> str:
        return file_diff(self.path, self.original, self.broken)

    @property
    def fix_patch(self) -> str:
        return file_diff(self.path, self.broken, self.original)


class _Text:
    """Source text with AST (line, utf-8 byte column) positions mapped to string offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for ln in self.lines:
            self.starts.append(self.starts[-1] + len(ln))

    def off(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode()[:col].decode(errors="replace"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (
            self.off(node.lineno, node.col_offset),  # type: ignore[attr-defined]
            self.off(node.end_lineno, node.end_col_offset),  # type: ignore[attr-defined]
        )

    def edit(self, start: int, end: int, repl: str) -> str:
        return self.text[:start] + repl + self.text[end:]


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
        return True
    except (SyntaxError, ValueError):
        return False


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _op_edit(t: _Text, left: ast.AST, right: ast.AST, old: str, new: str) -> str | None:
    """Replace the operator between two operands when the gap holds exactly it (and parens)."""
    _, a_end = t.span(left)
    b, _ = t.span(right)
    gap = t.text[a_end:b]
    if "#" in gap or "\\" in gap:
        return None
    if gap.replace("(", "").replace(")", "").strip() != old:
        return None
    i = gap.index(old)
    return t.edit(a_end + i, a_end + i + len(old), new)


def _in_function(t: _Text, rel: str, fn: ast.AST, cat: str, kind: str, line: int, new: str | None):
    if new is None or new == t.text:
        return None
    return Breakage(cat, kind, rel, line, t.text, new, getattr(fn, "name", ""))


def _imports(t: _Text, rel: str, mod: ast.Module) -> Iterator[Breakage]:
    for node in mod.body:  # module level only: nested imports are often optional
        if not isinstance(node, ast.Import | ast.ImportFrom) or node.lineno != node.end_lineno:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        line = t.lines[node.lineno - 1]
        start, end = t.span(node)
        if line.strip() != t.text[start:end].strip():
            continue  # shares its line with another statement
        ls = t.starts[node.lineno - 1]
        yield Breakage(
            "import", "remove-import", rel, node.lineno, t.text, t.edit(ls, ls + len(line), "")
        )
        name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        if name and len(name.split(".")[-1]) > 1:
            seg = t.text[start:end]
            j = seg.find(name)
            if j >= 0:
                bad = name[:-1]
                yield Breakage(
                    "import", "misspell-module", rel, node.lineno, t.text,
                    t.edit(start + j, start + j + len(name), bad),
                )  # fmt: skip


def _signatures(t: _Text, rel: str, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator:
    args = fn.args
    pos = args.posonlyargs + args.args
    if args.defaults:  # drop the last positional default
        last, default = pos[-1], args.defaults[-1]
        _, a_end = t.span(last)
        _, d_end = t.span(default)
        if t.text[a_end:d_end].lstrip().startswith("="):
            yield _in_function(
                t, rel, fn, "signature", "drop-default", fn.lineno, t.edit(a_end, d_end, "")
            )
    required = pos[: len(pos) - len(args.defaults)]
    if required:  # a new required parameter after the last required one
        _, r_end = t.span(required[-1])
        yield _in_function(
            t, rel, fn, "signature", "add-parameter", fn.lineno, t.edit(r_end, r_end, ", strict")
        )
    plain = [a for a in required if a.arg not in ("self", "cls")]
    if len(plain) >= 2:  # swap the first two (annotations move with them)
        (s1, e1), (s2, e2) = t.span(plain[0]), t.span(plain[1])
        a1, a2 = t.text[s1:e1], t.text[s2:e2]
        new = t.text[:s1] + a2 + t.text[e1:s2] + a1 + t.text[e2:]
        yield _in_function(t, rel, fn, "signature", "swap-parameters", fn.lineno, new)


def _logic(t: _Text, rel: str, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator:
    for node in ast.walk(fn):
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP_SWAP:
            old, new = _CMP_SWAP[type(node.ops[0])]
            yield _in_function(
                t,
                rel,
                fn,
                "logic",
                "swap-comparison",
                node.lineno,
                _op_edit(t, node.left, node.comparators[0], old, new),
            )
        elif isinstance(node, ast.BinOp) and type(node.op) in _BIN_SWAP:
            old, new = _BIN_SWAP[type(node.op)]
            yield _in_function(
                t,
                rel,
                fn,
                "logic",
                "swap-arithmetic",
                node.lineno,
                _op_edit(t, node.left, node.right, old, new),
            )
        elif isinstance(node, ast.BoolOp) and type(node.op) in _BOOL_SWAP:
            old, new = _BOOL_SWAP[type(node.op)]
            yield _in_function(
                t,
                rel,
                fn,
                "logic",
                "swap-boolean",
                node.lineno,
                _op_edit(t, node.values[0], node.values[1], old, new),
            )
        elif isinstance(node, ast.If | ast.While):
            s, e = t.span(node.test)
            yield _in_function(
                t,
                rel,
                fn,
                "logic",
                "negate-condition",
                node.lineno,
                t.text[:s] + "not (" + t.text[s:e] + ")" + t.text[e:],
            )
        elif (
            isinstance(node, ast.Constant)
            and type(node.value) is int
            and 0 <= node.value <= 8
            and node.lineno == node.end_lineno
        ):
            s, e = t.span(node)
            if t.text[s:e] == str(node.value):
                yield _in_function(
                    t,
                    rel,
                    fn,
                    "logic",
                    "off-by-one",
                    node.lineno,
                    t.edit(s, e, str(node.value + 1)),
                )


def _types(t: _Text, rel: str, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator:
    for node in ast.walk(fn):
        if isinstance(node, ast.Return) and node.value is not None:
            if isinstance(node.value, ast.Constant) and node.value.value is None:
                continue
            s, e = t.span(node.value)
            v = t.text[s:e]
            for kind, wrapped in (("return-str", f"str({v})"), ("return-list", f"[{v}]")):
                new = t.text[:s] + wrapped + t.text[e:]
                yield _in_function(t, rel, fn, "type", kind, node.lineno, new)


def _syntax(t: _Text, rel: str, mod: ast.Module) -> Iterator[Breakage]:
    for node in ast.walk(mod):
        if isinstance(node, ast.FunctionDef | ast.If | ast.For | ast.While | ast.ClassDef):
            line = t.lines[node.lineno - 1]
            body0 = node.body[0].lineno
            if body0 > node.lineno and line.rstrip().endswith(":") and "#" not in line:
                ls = t.starts[node.lineno - 1]
                k = ls + len(line.rstrip()) - 1
                yield Breakage(
                    "syntax",
                    "missing-colon",
                    rel,
                    node.lineno,
                    t.text,
                    t.edit(k, k + 1, ""),
                    getattr(node, "name", ""),
                )
        elif isinstance(node, ast.Call) and node.lineno == node.end_lineno:
            s, e = t.span(node)
            if t.text[e - 1 : e] == ")":
                yield Breakage(
                    "syntax", "unclosed-call", rel, node.lineno, t.text, t.edit(e - 1, e, "")
                )


def _file_breakages(rel: str, text: str, called: set[str]) -> list[Breakage]:
    try:
        mod = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    t = _Text(text)
    out: list[Breakage | None] = [*_imports(t, rel, mod), *_syntax(t, rel, mod)]
    for fn in _functions(mod):
        if called and fn.name not in called:
            continue  # a function the tests never name is rarely caught by them
        out += [*_signatures(t, rel, fn), *_logic(t, rel, fn), *_types(t, rel, fn)]
    kept = []
    for b in out:
        if b is None or b.broken == b.original:
            continue
        if (b.category == "syntax") == _parses(b.broken):
            continue  # a syntax break must not parse; every other break must
        kept.append(b)
    return kept


def breakages(files: dict[str, str], test_text: str, seed: int = 0) -> dict[str, list[Breakage]]:
    """Every candidate breakage of the given source files, by category, in a seeded order.

    ``test_text`` (the project's tests, concatenated) restricts function-level edits to
    functions whose names the tests mention; the order is ``interleave``'s.
    """
    import re

    called = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", test_text))
    found: list[Breakage] = []
    for rel in sorted(files):
        found += _file_breakages(rel, files[rel], called)
    return interleave(found, seed)


def interleave(found: list[Breakage], seed: int) -> dict[str, list[Breakage]]:
    """Candidates by category, shuffled with ``seed`` and then interleaved over (kind, file)
    so that a small quota still spreads over both."""
    by_cat: dict[str, list[Breakage]] = {}
    for b in found:
        by_cat.setdefault(b.category, []).append(b)
    rng = random.Random(seed)
    out: dict[str, list[Breakage]] = {}
    for cat, items in sorted(by_cat.items()):
        rng.shuffle(items)
        groups: dict[tuple[str, str], list[Breakage]] = {}
        for b in items:
            groups.setdefault((b.kind, b.path), []).append(b)
        order: list[Breakage] = []
        keys = sorted(groups)
        rng.shuffle(keys)
        while any(groups[k] for k in keys):
            for k in keys:
                if groups[k]:
                    order.append(groups[k].pop())
        out[cat] = order
    return out

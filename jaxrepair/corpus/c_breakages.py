"""Procedural breakages of real C and C++ source and of its build files (Makefile, CMake):
each is one small text edit, recorded as a break patch with its exact inverse as the fix.

Why text edits located on a masked copy rather than a C parser: no parser ships with the
toolchain the sandbox has, and a real bug is a few changed characters. The mask blanks
comments, string and character literals and preprocessor lines (same length, newlines kept),
so an operator or a brace found in it is code; the edit is made at the same offset in the real
text. Whether the compiler or the tests notice is decided later, by running the build.

Categories (envs.task.CATEGORIES): ``import`` (an ``#include`` removed or its header name
misspelt), ``signature`` (a parameter added, dropped, or two swapped at a definition),
``logic`` (a comparison, ``+``/``-`` or ``&&``/``||`` swapped, a condition negated, a small
integer constant off by one), ``type`` (a definition's return or first parameter type
changed, a local integer narrowed to ``unsigned char``), ``syntax`` (a statement's ``;`` or an
inner block's ``}`` dropped), ``config`` (the build files: an object or source dropped from
a target, a compiler flag or CMake variable misspelt). Function-level edits (signature,
logic, type) are made only in functions whose names the tests mention.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .python_breakages import Breakage, interleave

__all__ = ["C_SUFFIXES", "breakages", "functions", "mask"]

C_SUFFIXES = (".c", ".h", ".cc", ".cpp", ".cxx", ".hpp")
_CMAKE = "CMakeLists.txt"
_KEYWORDS = {"if", "while", "for", "switch", "return", "sizeof", "do", "else", "case"}
_QUALIFIERS = {"const", "noexcept", "override", "final"}
_CMP_SWAP = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}
_SCALARS = r"(?:unsigned\s+|signed\s+)?(?:int|long|short|size_t|unsigned|uInt|uLong|Int32|UInt32)"


def mask(text: str) -> str:
    """``text`` with comments, string/char literals and preprocessor lines blanked to spaces
    (newlines kept, so offsets and line numbers are the real text's)."""
    out = list(text)
    i, n = 0, len(text)
    line_start = True
    while i < n:
        c = text[i]
        if line_start and c in " \t":
            i += 1
            continue
        if line_start and c == "#":  # a directive, with its backslash continuations
            while i < n and text[i] != "\n":
                if text[i] == "\\" and i + 1 < n and text[i + 1] == "\n":
                    out[i] = " "
                    i += 2
                    continue
                out[i] = " "
                i += 1
            continue
        line_start = c == "\n"
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
        else:
            i += 1
            continue
        for k in range(i, j):
            if out[k] != "\n":
                out[k] = " "
        i = j
    return "".join(out)


def _match(m: str, i: int, open_: str, close: str) -> int:
    """Index of the bracket matching the one at ``i`` (forwards), or -1."""
    depth = 0
    for j in range(i, len(m)):
        if m[j] == open_:
            depth += 1
        elif m[j] == close:
            depth -= 1
            if depth == 0:
                return j
    return -1


def _match_back(m: str, i: int, open_: str, close: str) -> int:
    depth = 0
    for j in range(i, -1, -1):
        if m[j] == close:
            depth += 1
        elif m[j] == open_:
            depth -= 1
            if depth == 0:
                return j
    return -1


@dataclass(frozen=True)
class Function:
    """One function definition: offsets into the text (the mask's are the same)."""

    name: str
    head: tuple[int, int]  # return type and qualifiers, before the name
    params: tuple[int, int]  # inside the parentheses
    body: tuple[int, int]  # from "{" to "}" inclusive


def _function(m: str, start: int, brace: int) -> Function | None:
    """The definition whose body opens at ``brace`` (its declaration starts at ``start``),
    or None when the braces open something else (a struct, an initialiser)."""
    decl = m[start:brace]
    colon = re.search(r"\)\s*:(?!:)", decl)  # a C++ constructor's initialiser list
    if colon is not None:
        k = start + colon.start()
    else:
        tail = decl.rstrip()
        while (q := re.search(r"\b(\w+)$", tail)) is not None and q.group(1) in _QUALIFIERS:
            tail = tail[: q.start()].rstrip()
        k = start + len(tail) - 1
    if k <= start or m[k] != ")":
        return None
    p_open = _match_back(m, k, "(", ")")
    if p_open <= start:
        return None
    j = p_open - 1
    while j > start and m[j].isspace():
        j -= 1
    if m[j] == ")":  # BZ_API(name) (params): the name is the macro's argument
        inner = _match_back(m, j, "(", ")")
        name_m = re.fullmatch(r"\s*(\w+)\s*", m[inner + 1 : j]) if inner > start else None
        macro = re.search(r"(\w+)\s*$", m[start:inner]) if inner > start else None
        if name_m is None or macro is None:
            return None
        name, name_start = name_m.group(1), start + macro.start(1)
    else:
        name_m = re.search(r"((?:\w+::)*~?\w+)$", m[start : j + 1])
        if name_m is None:
            return None
        name, name_start = name_m.group(1).split("::")[-1].lstrip("~"), start + name_m.start(1)
    if name in _KEYWORDS or "=" in m[start:name_start]:
        return None
    head_start = start
    while head_start < name_start and m[head_start].isspace():
        head_start += 1
    return Function(name, (head_start, name_start), (p_open + 1, k), (brace, -1))


def functions(text: str) -> list[Function]:
    """Every function definition at file level (C++ namespaces and ``extern "C"`` blocks
    are looked into; struct, class and initialiser bodies are not)."""
    m = mask(text)
    out: list[Function] = []
    start, i, n = 0, 0, len(m)
    while i < n:
        c = m[i]
        if c in ";}":
            start = i + 1
        elif c == "{":
            decl = m[start:i]
            if re.search(r"\bnamespace\b[\w\s:]*$|\bextern\s*$", decl):
                start = i + 1  # transparent: its contents are file level
            else:
                end = _match(m, i, "{", "}")
                if end < 0:
                    break
                f = _function(m, start, i)
                if f is not None:
                    out.append(Function(f.name, f.head, f.params, (i, end)))
                i, start = end, end + 1
        i += 1
    return out


class MaskedFile:
    """A source file with its mask (comments and literals blanked: `mask` for C, another
    language's own masker for it), making edits of it."""

    def __init__(self, rel: str, text: str, masker: Callable[[str], str] | None = None) -> None:
        self.rel, self.text = rel, text
        self.m = (masker or mask)(text)

    def edit(
        self, cat: str, kind: str, start: int, end: int, repl: str, fn: str = ""
    ) -> Breakage | None:
        """The breakage replacing text[start:end] by repl (None when nothing changes)."""
        new = self.text[:start] + repl + self.text[end:]
        if new == self.text:
            return None
        line = self.text.count("\n", 0, start) + 1
        return Breakage(cat, kind, self.rel, line, self.text, new, fn)


def _includes(f: MaskedFile) -> Iterator[Breakage | None]:
    for mt in re.finditer(r'(?m)^[ \t]*#[ \t]*include[ \t]*([<"])([\w./-]+)[>"][^\n]*\n', f.text):
        yield f.edit("import", "remove-include", mt.start(), mt.end(), "")
        name = mt.group(2)
        stem, dot, ext = name.rpartition(".")
        if dot and len(stem.rsplit("/", 1)[-1]) > 1:
            s = mt.start(2) + len(stem) - 1  # drop the last letter before the extension
            yield f.edit("import", "misspell-header", s, s + 1, "")


def _split_params(f: MaskedFile, fn: Function) -> list[tuple[int, int]]:
    """(start, end) of each parameter, stripped; [] for ``()`` and ``(void)``."""
    a, b = fn.params
    inner = f.m[a:b]
    if not inner.strip() or inner.strip() == "void" or "..." in inner or "(" in inner:
        return []
    spans, s = [], a
    for j in range(a, b + 1):
        if j == b or f.m[j] == ",":
            x, y = s, j
            while x < y and f.m[x].isspace():
                x += 1
            while y > x and f.m[y - 1].isspace():
                y -= 1
            spans.append((x, y))
            s = j + 1
    return spans


def _signatures(f: MaskedFile, fn: Function) -> Iterator[Breakage | None]:
    ps = _split_params(f, fn)
    a, b = fn.params
    if not ps and f.m[a:b].strip() == "void":
        s = a + f.m[a:b].index("void")
        yield f.edit("signature", "add-parameter", s, s + 4, "int strict", fn.name)
    if not ps:
        return
    end = ps[-1][1]
    yield f.edit("signature", "add-parameter", end, end, ", int strict", fn.name)
    if len(ps) >= 2:
        yield f.edit("signature", "drop-parameter", ps[-2][1], ps[-1][1], "", fn.name)
        (s1, e1), (s2, e2) = ps[0], ps[1]
        p1, p2 = f.text[s1:e1], f.text[s2:e2]
        if p1 != p2:
            new = p2 + f.text[e1:s2] + p1
            yield f.edit("signature", "swap-parameters", s1, e2, new, fn.name)


def _logic(f: MaskedFile, fn: Function) -> Iterator[Breakage | None]:
    a, b = fn.body
    body = f.m[a:b]
    for mt in re.finditer(r"(?<=\s)(<=|>=|==|!=|<|>)(?=\s)", body):
        s = a + mt.start()
        yield f.edit(
            "logic", "swap-comparison", s, s + len(mt.group(1)), _CMP_SWAP[mt.group(1)], fn.name
        )
    for mt in re.finditer(r"(?<=\w|\)|\])\s([+-])\s(?=[\w(])", body):
        s = a + mt.start(1)
        yield f.edit(
            "logic", "swap-arithmetic", s, s + 1, "-" if mt.group(1) == "+" else "+", fn.name
        )
    for mt in re.finditer(r"(?<=\s)(&&|\|\|)(?=\s)", body):
        s = a + mt.start()
        yield f.edit(
            "logic", "swap-boolean", s, s + 2, "||" if mt.group(1) == "&&" else "&&", fn.name
        )
    for mt in re.finditer(r"\bif\s*\(", body):
        o = a + mt.end() - 1
        c = _match(f.m, o, "(", ")")
        if c > o and f.text.count("\n", o, c) == 0:
            cond = f.text[o + 1 : c]
            yield f.edit("logic", "negate-condition", o + 1, c, f"!({cond.strip()})", fn.name)
    for mt in re.finditer(r"(?<![\w.])([0-8])(?![\w.])", body):
        s = a + mt.start(1)
        yield f.edit("logic", "off-by-one", s, s + 1, str(int(mt.group(1)) + 1), fn.name)


def _types(f: MaskedFile, fn: Function) -> Iterator[Breakage | None]:
    hs, he = fn.head
    head = f.m[hs:he]
    if "*" in head:  # a pointer return value becomes a value
        s = hs + head.rindex("*")
        yield f.edit("type", "change-return-type", s, s + 1, "", fn.name)
    else:
        mt = re.search(rf"\b{_SCALARS}\s*$", head)
        if mt is not None:
            s, e = hs + mt.start(), hs + mt.end()
            yield f.edit("type", "change-return-type", s, e, "char *", fn.name)
    ps = _split_params(f, fn)
    if ps:
        s, e = ps[0]
        p = f.m[s:e]
        name = re.search(r"(\w+)\s*(\[\s*\])?$", p)
        if name is not None:
            k = s + name.start(1)
            if "*" in p[: name.start(1)]:
                star = s + p.rindex("*", 0, name.start(1))
                yield f.edit("type", "change-parameter-type", star, star + 1, "", fn.name)
            else:
                yield f.edit("type", "change-parameter-type", k, k, "*", fn.name)
    a, b = fn.body
    for mt in re.finditer(rf"(?m)^[ \t]+({_SCALARS})[ \t]+\w+[ \t]*[=;,]", f.m[a:b]):
        yield f.edit(
            "type", "narrow-local-type", a + mt.start(1), a + mt.end(1), "unsigned char", fn.name
        )


def _syntax(f: MaskedFile, fn: Function) -> Iterator[Breakage | None]:
    a, b = fn.body
    for mt in re.finditer(r"(?m)^([ \t]*)(\S[^\n]*);[ \t\r]*$", f.m[a:b]):
        if re.match(r"for\b", mt.group(2)):
            continue
        s = a + mt.end(2)
        yield f.edit("syntax", "missing-semicolon", s, s + 1, "", fn.name)
    for mt in re.finditer(r"(?m)^[ \t]+\}[ \t\r]*\n", f.m[a + 1 : b]):  # the whole line
        s = a + 1 + mt.start()
        yield f.edit("syntax", "missing-brace", s, s + len(mt.group(0)), "", fn.name)


def _make_file(f: MaskedFile) -> Iterator[Breakage | None]:
    """Makefile (or Makefile.in): an object dropped from a variable, a flag misspelt."""
    for mt in re.finditer(r"(?m)^([A-Za-z_][\w]*)[ \t]*[:+]?=((?:[^\n]*\\\n)*[^\n]*)$", f.text):
        var, s = mt.group(1), mt.start(2)
        for ob in re.finditer(r"(?<![\w$(/.-])[\w-]+\.l?o\b", mt.group(2)):
            e = s + ob.end()
            while e < len(f.text) and f.text[e] in " \t":
                e += 1
            yield f.edit("config", "drop-object", s + ob.start(), e, "", var)
        if var.endswith("FLAGS") or var in ("BIGFILES", "DEFS"):
            for fl in re.finditer(r"(?<!\S)-[A-Za-z][\w=+-]{2,}", mt.group(2)):
                e = s + fl.end()
                yield f.edit("config", "misspell-flag", e - 1, e, "", var)


def _cmake_file(f: MaskedFile) -> Iterator[Breakage | None]:
    """CMakeLists.txt: a source dropped from a target or list, a flag or variable misspelt."""
    m = _cmake_mask(f.text)
    for mt in re.finditer(r"(?i)\b(add_library|add_executable|set)\s*\(", m):
        o = mt.end() - 1
        c = _match(m, o, "(", ")")
        for src in re.finditer(r"(?<![\w${}/.-])[\w${}/.-]+\.(?:c|cc|cpp|cxx)(?![\w.])", m[o:c]):
            e = o + src.end()
            while e < c and f.text[e] in " \t":
                e += 1
            yield f.edit("config", "drop-source", o + src.start(), e, "", mt.group(1))
    for fl in re.finditer(r"(?<![\w\"-])-W[\w=+-]{2,}", m):
        yield f.edit("config", "misspell-flag", fl.end() - 1, fl.end(), "")
    for var in re.finditer(r"\$\{(\w{4,})\}", m):
        if var.group(1).startswith("CMAKE_"):
            continue  # CMake's own variables: install paths and the like, rarely caught
        yield f.edit("config", "misspell-variable", var.end(1) - 1, var.end(1), "", var.group(1))


def _cmake_mask(text: str) -> str:
    """CMake text with ``#`` comments blanked (quoted strings are kept: flags live in them)."""
    return re.sub(r"(?m)#[^\n]*", lambda mt: " " * len(mt.group(0)), text)


def _source_breakages(f: MaskedFile, called: set[str]) -> list[Breakage | None]:
    out: list[Breakage | None] = []
    if not f.rel.endswith((".h", ".hpp")):
        out += _includes(f)
    for fn in functions(f.text):
        out += _syntax(f, fn)
        if called and fn.name not in called:
            continue  # a function the tests never name is rarely caught by them
        out += [*_signatures(f, fn), *_logic(f, fn), *_types(f, fn)]
    return out


def distinct(cands: Iterable[Breakage | None]) -> list[Breakage]:
    """A file's candidates that exist, each differing from every earlier one."""
    seen: set[str] = set()
    out: list[Breakage] = []
    for b in cands:
        if b is not None and b.broken not in seen:
            seen.add(b.broken)
            out.append(b)
    return out


def breakages(files: dict[str, str], test_text: str, seed: int = 0) -> dict[str, list[Breakage]]:
    """Every candidate breakage of the given C/C++ sources and build files, by category, in
    python_breakages.interleave's seeded order. ``test_text`` (the project's tests) limits
    function-level edits to functions the tests name (no limit when it names none)."""
    called = set(re.findall(r"[A-Za-z_]\w*", test_text))
    found: list[Breakage] = []
    for rel in sorted(files):
        f = MaskedFile(rel, files[rel])
        name = rel.rsplit("/", 1)[-1]
        if name == _CMAKE:
            cands = list(_cmake_file(f))
        elif name in ("Makefile", "Makefile.in", "makefile", "GNUmakefile"):
            cands = list(_make_file(f))
        elif rel.endswith(C_SUFFIXES):
            cands = _source_breakages(f, called)
        else:
            continue
        found += distinct(cands)
    return interleave(found, seed)

"""Procedural breakages of real JavaScript source and of its ``package.json``: each is one small
text edit, recorded as a break patch with its exact inverse as the fix.

Why text edits on a masked copy (as c_breakages): no JavaScript parser ships with Python, and
a real bug is a few changed characters. The mask blanks comments, string, template and
regular-expression literals (same length, newlines kept), so an operator, a brace or a
``function`` found in it is code; the edit is made at the same offset in the real text.
Whether a candidate parses is asked of node itself (``node_parses``): a ``syntax`` breakage
must not parse, every other one must. Whether the tests notice is decided by running them.

Categories (envs.task.CATEGORIES): ``import`` (a ``require``/``import`` line removed, or its
module name misspelt), ``signature`` (at a definition: the first two parameters swapped, the
last dropped, a new first one inserted), ``logic`` (a comparison, ``+``/``-`` or
``&&``/``||`` swapped, a condition negated, a small integer off by one), ``type`` (a method or
property of the wrong type: ``.push(`` -> ``.add(``, ``.length`` -> ``.size``, ...; a return
value turned into a string or wrapped in an array), ``syntax`` (a call's closing parenthesis
or a block's ``}`` line dropped), ``config`` (``package.json``: ``main`` misspelt or dropped,
``"type": "module"`` set on CommonJS sources, an ``exports`` target misspelt).
Function-level edits (signature, logic, type) are made only in functions the tests name (a
module's default export counts as named: the tests require the package).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from .c_breakages import MaskedFile, _match, distinct
from .python_breakages import Breakage, interleave

__all__ = ["JS_SUFFIXES", "JsFunction", "breakages", "functions", "mask", "node_parses"]

JS_SUFFIXES = (".js", ".cjs", ".mjs")
_PACKAGE_JSON = "package.json"
_KEYWORDS = {
    "if", "for", "while", "switch", "catch", "function", "return", "typeof", "with", "else",
    "do", "try", "new", "delete", "void", "in", "of", "instanceof", "case", "throw", "await",
    "yield", "super", "import", "export", "class", "extends", "var", "let", "const",
}  # fmt: skip
_DEFAULT_EXPORT = "module.exports"
_CMP_SWAP = {
    "===": "!==", "!==": "===", "==": "!=", "!=": "==",
    "<": "<=", "<=": "<", ">": ">=", ">=": ">",
}  # fmt: skip
# methods and properties of one type used on another: a TypeError (or a wrong value) at run time
_WRONG_METHOD = {
    "push": "add", "forEach": "each", "join": "concat", "indexOf": "contains", "slice": "substr",
    "toLowerCase": "toLower", "toUpperCase": "toUpper", "trim": "strip", "test": "match",
    "replace": "replaceAll", "charAt": "at", "keys": "entries", "hasOwnProperty": "has",
    "split": "splitLines", "map": "flatMap", "filter": "find", "concat": "push",
}  # fmt: skip
# a regular expression may start after these (else "/" divides)
_REGEX_BEFORE = set("(,=:[!&|?{};+-*%<>~^") | {""}
_WORD = re.compile(r"[\w$]+")
_REGEX_KEYWORDS = {"return", "typeof", "case", "do", "else", "in", "of", "void", "throw"}


def mask(text: str) -> str:
    """``text`` with comments and string, template and regex literals blanked to spaces
    (newlines kept, so offsets and line numbers are the real text's)."""
    out = list(text)
    i, n = 0, len(text)
    prev = ""  # the last significant character (or word) before i
    while i < n:
        c = text[i]
        j = -1
        if text.startswith("//", i) or (i == 0 and text.startswith("#!")):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif c in "\"'`":
            j = i + 1
            while j < n and text[j] != c and (c == "`" or text[j] != "\n"):
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
        elif c == "/" and (prev in _REGEX_BEFORE or prev in _REGEX_KEYWORDS):
            j, cls = i + 1, False
            while j < n and text[j] != "\n" and (cls or text[j] != "/"):
                if text[j] == "\\":
                    j += 1
                elif text[j] == "[":
                    cls = True
                elif text[j] == "]":
                    cls = False
                j += 1
            j += 1
            while j < n and (text[j].isalpha()):  # flags
                j += 1
            j = min(j, n)
        if j < 0:
            if not c.isspace():
                if c.isalnum() or c in "_$":
                    w = _WORD.match(text, i)
                    assert w is not None
                    prev = w.group(0)
                    i += len(prev)
                    continue
                prev = c
            i += 1
            continue
        for k in range(i + (1 if c in "\"'`" else 0), j - (1 if c in "\"'`" else 0)):
            if out[k] != "\n":
                out[k] = " "
        if c == "/" and not text.startswith(("//", "/*"), i):
            for k in range(i, j):  # a regex: its slashes too, so "/" is never code there
                if out[k] != "\n":
                    out[k] = " "
            prev = "x"
        elif c in "\"'`":
            prev = "x"
        i = j
    return "".join(out)


@dataclass(frozen=True)
class JsFunction:
    """One function: the names it is known by, offsets of its parameters and body."""

    names: tuple[str, ...]
    params: tuple[int, int]  # inside the parentheses
    body: tuple[int, int]  # from "{" to "}" inclusive


def _target(m: str, start: int) -> tuple[str, ...]:
    """The names an assignment or property gives the function starting at ``start``."""
    before = m[:start].rstrip()
    before = re.sub(r"\basync$", "", before).rstrip()
    t = re.search(r"([A-Za-z_$][\w$.]*)\s*(?:=|:)$", before)
    if t is None or before.endswith(("==", "=>", "!=")):
        return ()
    target = t.group(1)
    if target == _DEFAULT_EXPORT or target.startswith("module.exports."):
        tail = target.removeprefix(_DEFAULT_EXPORT).lstrip(".")
        return (tail,) if tail else (_DEFAULT_EXPORT,)
    return (target.rsplit(".", 1)[-1],)


def functions(text: str) -> list[JsFunction]:
    """Every function with a block body: ``function`` expressions and declarations, arrow
    functions, and methods of classes and object literals (nested ones included)."""
    m = mask(text)
    out: list[JsFunction] = []
    seen: set[int] = set()

    def add(names: tuple[str, ...], p_open: int, p_close: int) -> None:
        k = p_close + 1 if m[p_close] == ")" else p_close
        arrow = re.match(r"\s*=>\s*\{", m[k:])
        brace = re.match(r"\s*\{", m[k:])
        if arrow is not None:
            k += arrow.end() - 1
        elif brace is not None:
            k += brace.end() - 1
        else:
            return
        end = _match(m, k, "{", "}")
        if end < 0 or k in seen:
            return
        seen.add(k)
        out.append(JsFunction(tuple(n for n in names if n), (p_open + 1, p_close), (k, end)))

    for f in re.finditer(r"\bfunction\b\s*\*?\s*([A-Za-z_$][\w$]*)?\s*\(", m):
        o = f.end() - 1
        c = _match(m, o, "(", ")")
        if c > 0:
            add(((f.group(1) or ""), *_target(m, f.start())), o, c)
    for a in re.finditer(r"\)\s*=>\s*\{", m):
        c = a.start()
        o = _back(m, c)
        if o >= 0:
            add(_target(m, o), o, c)
    for a in re.finditer(r"(?<![\w$.])([A-Za-z_$][\w$]*)\s*=>\s*\{", m):
        if a.group(1) in _KEYWORDS:
            continue
        s, e = a.start(1), a.end(1)
        add(_target(m, s), s - 1, e)  # params span: the bare identifier
    meth = (
        r"(?m)(?:^|(?<=[{,;}]))[ \t]*(?:(?:static|async|get|set)[ \t]+)*\*?([A-Za-z_$][\w$]*)\s*\("
    )
    for f in re.finditer(meth, m):
        if f.group(1) in _KEYWORDS:
            continue
        before = m[: f.start(1)].rstrip()
        if before and before[-1] not in "{,;}":
            continue
        o = f.end() - 1
        c = _match(m, o, "(", ")")
        if c > 0:
            add((f.group(1),), o, c)
    return sorted(out, key=lambda fn: fn.body)


def _back(m: str, close: int) -> int:
    """Index of the "(" matching the ")" at ``close``, or -1."""
    depth = 0
    for j in range(close, -1, -1):
        if m[j] == ")":
            depth += 1
        elif m[j] == "(":
            depth -= 1
            if depth == 0:
                return j
    return -1


_REQUIRE_LINE = re.compile(
    r"(?m)^[ \t]*(?:(?:var|let|const)[ \t]+)?(?:[\w$.]+[ \t]*=[ \t]*)?require\([ \t]*(['\"])([^'\"\n]+)\1"
    r"[ \t]*\)[^\n;]*;?[ \t]*\n"
)
_IMPORT_LINE = re.compile(r"(?m)^[ \t]*import\b[^\n;]*?(['\"])([^'\"\n]+)\1[ \t]*;?[ \t]*\n")


def _imports(f: MaskedFile) -> Iterator[Breakage | None]:
    for rx in (_REQUIRE_LINE, _IMPORT_LINE):
        for mt in rx.finditer(f.text):
            if not re.search(r"\b(?:require|import)\b", f.m[mt.start() : mt.end()]):
                continue  # inside a comment or a literal
            yield f.edit("import", "remove-require" if rx is _REQUIRE_LINE else "remove-import",
                         mt.start(), mt.end(), "")  # fmt: skip
            name = mt.group(2)
            stem = name.rsplit("/", 1)[-1]
            stem = stem[: -len(ext)] if (ext := _ext(stem)) else stem
            if len(stem) > 1:
                s = mt.start(2) + len(name) - len(_ext(name)) - 1  # the stem's last letter
                yield f.edit("import", "misspell-module", s, s + 1, "")


def _ext(name: str) -> str:
    e = re.search(r"\.(?:js|cjs|mjs|json)$", name)
    return e.group(0) if e else ""


_PARAM = re.compile(r"[A-Za-z_$][\w$]*")


def _split_params(f: MaskedFile, fn: JsFunction) -> list[tuple[int, int]]:
    """(start, end) of each plain parameter; [] when any is destructured, defaulted or rest."""
    a, b = fn.params
    inner = f.m[a:b]
    if not inner.strip():
        return []
    spans, s = [], a
    for j in range(a, b + 1):
        if j == b or f.m[j] == ",":
            x, y = s, j
            while x < y and f.m[x].isspace():
                x += 1
            while y > x and f.m[y - 1].isspace():
                y -= 1
            if not _PARAM.fullmatch(f.m[x:y]):
                return []
            spans.append((x, y))
            s = j + 1
    return spans


def _signatures(f: MaskedFile, fn: JsFunction, name: str) -> Iterator[Breakage | None]:
    ps = _split_params(f, fn)
    a, b = fn.params
    if not ps and f.m[a:b].strip():
        return
    new_param = next((p for p in ("strict", "strictMode") if p not in f.text), "strict_")
    if ps:
        s = ps[0][0]
        yield f.edit("signature", "insert-parameter", s, s, f"{new_param}, ", name)
        drop_from = ps[-2][1] if len(ps) >= 2 else ps[0][0]
        yield f.edit("signature", "drop-parameter", drop_from, ps[-1][1], "", name)
    if len(ps) >= 2:
        (s1, e1), (s2, e2) = ps[0], ps[1]
        p1, p2 = f.text[s1:e1], f.text[s2:e2]
        yield f.edit("signature", "swap-parameters", s1, e2, p2 + f.text[e1:s2] + p1, name)


def _logic(f: MaskedFile, fn: JsFunction, name: str) -> Iterator[Breakage | None]:
    a, b = fn.body
    body = f.m[a:b]
    for mt in re.finditer(r"(?<=\s)(===|!==|==|!=|<=|>=|<|>)(?=\s)", body):
        s = a + mt.start()
        op = mt.group(1)
        yield f.edit("logic", "swap-comparison", s, s + len(op), _CMP_SWAP[op], name)
    for mt in re.finditer(r"(?<=[\w$)\]])\s([+-])\s(?=[\w$(])", body):
        s = a + mt.start(1)
        yield f.edit("logic", "swap-arithmetic", s, s + 1, "-" if mt.group(1) == "+" else "+", name)
    for mt in re.finditer(r"(?<=\s)(&&|\|\|)(?=\s)", body):
        s = a + mt.start()
        yield f.edit("logic", "swap-boolean", s, s + 2, "||" if mt.group(1) == "&&" else "&&", name)
    for mt in re.finditer(r"\bif\s*\(", body):
        o = a + mt.end() - 1
        c = _match(f.m, o, "(", ")")
        if c > o and f.text.count("\n", o, c) == 0:
            cond = f.text[o + 1 : c]
            yield f.edit("logic", "negate-condition", o + 1, c, f"!({cond.strip()})", name)
    for mt in re.finditer(r"(?<![\w$.])([0-8])(?![\w$.])", body):
        s = a + mt.start(1)
        yield f.edit("logic", "off-by-one", s, s + 1, str(int(mt.group(1)) + 1), name)


def _types(f: MaskedFile, fn: JsFunction, name: str) -> Iterator[Breakage | None]:
    a, b = fn.body
    body = f.m[a:b]
    for mt in re.finditer(r"\.([A-Za-z]+)(?=\s*\()", body):
        wrong = _WRONG_METHOD.get(mt.group(1))
        if wrong is not None:
            s = a + mt.start(1)
            yield f.edit("type", "wrong-method", s, s + len(mt.group(1)), wrong, name)
    for mt in re.finditer(r"\.length\b(?!\s*=[^=])", body):
        s = a + mt.start() + 1
        yield f.edit("type", "wrong-property", s, s + len("length"), "size", name)
    for mt in re.finditer(r"\breturn[ \t]+([^;\n]+);", body):
        s, e = a + mt.start(1), a + mt.end(1)
        value = f.text[s:e]
        if re.fullmatch(r"\s*(?:null|undefined|true|false)\s*", value):
            continue
        yield f.edit("type", "return-string", s, e, f"String({value})", name)
        yield f.edit("type", "return-array", s, e, f"[{value}]", name)


def _syntax(f: MaskedFile, fn: JsFunction, name: str) -> Iterator[Breakage | None]:
    a, b = fn.body
    for mt in re.finditer(r"(?m)^[ \t]+\}[ \t]*\n", f.m[a + 1 : b]):  # an inner block's "}"
        s = a + 1 + mt.start()
        yield f.edit("syntax", "missing-brace", s, s + len(mt.group(0)), "", name)
    for mt in re.finditer(r"\)(?=;[ \t]*$)", f.m[a:b], re.M):  # a call statement's last ")"
        c = a + mt.start()
        o = _back(f.m, c)
        if o > a and f.text.count("\n", o, c) == 0:
            yield f.edit("syntax", "unclosed-call", c, c + 1, "", name)


def _package_json(f: MaskedFile) -> Iterator[Breakage | None]:
    """package.json: ``main`` misspelt or dropped, ``type`` set to module, an ``exports``
    target misspelt (edits of the text: its formatting is kept)."""
    try:
        meta = json.loads(f.text)
    except ValueError:
        return
    if not isinstance(meta, dict):
        return
    mt = re.search(r'(?m)^([ \t]*)"main"[ \t]*:[ \t]*"([^"\n]+)"[ \t]*(,?)[ \t]*\n', f.text)
    if mt is not None:
        main = mt.group(2)
        stem_end = mt.start(2) + len(main) - len(_ext(main))
        if len(main) - len(_ext(main)) > 1:
            yield f.edit("config", "misspell-main", stem_end - 1, stem_end, "")
        if main.removeprefix("./") not in ("index.js", "index", "."):
            yield f.edit("config", "drop-main", mt.start(), mt.end(), "")
    if meta.get("type", "commonjs") == "commonjs":
        ty = re.search(r'"type"[ \t]*:[ \t]*"(commonjs)"', f.text)
        if ty is not None:
            yield f.edit("config", "set-type-module", ty.start(1), ty.end(1), "module")
        else:
            nm = re.search(r'(?m)^([ \t]*)"name"[ \t]*:[ \t]*"[^"\n]*",[ \t]*\n', f.text)
            if nm is not None:
                line = f'{nm.group(1)}"type": "module",\n'
                yield f.edit("config", "set-type-module", nm.end(), nm.end(), line)
    ex = re.search(r'(?m)^[ \t]*"exports"[ \t]*:', f.text)
    if ex is not None and isinstance(meta.get("exports"), dict | str):
        start = ex.end()
        end = _match(f.text, f.text.find("{", start), "{", "}") if "{" in f.text[start:] else -1
        region = f.text[start : end if end > 0 else len(f.text)]
        for tg in re.finditer(r'"(\./[^"\n]*?)(\.(?:js|cjs|mjs|json))"', region):
            s = start + tg.start(2)
            yield f.edit("config", "misspell-exports", s - 1, s, "")


def _source_breakages(f: MaskedFile, called: set[str]) -> list[Breakage | None]:
    out: list[Breakage | None] = list(_imports(f))
    for fn in functions(f.text):
        name = next((n for n in fn.names if n), "")
        out += _syntax(f, fn, name)
        named = [n for n in fn.names if n == _DEFAULT_EXPORT or n in called]
        if called and not named:
            continue  # a function the tests never name is rarely caught by them
        name = named[0] if named else name
        out += [*_signatures(f, fn, name), *_logic(f, fn, name), *_types(f, fn, name)]
    return out


_CHECK = r"""
const vm = require('vm');
let data = '';
process.stdin.on('data', (c) => { data += c; });
process.stdin.on('end', () => {
  const out = JSON.parse(data).map(([code, esm]) => {
    code = code.replace(/^#!/, '//');
    try {
      if (esm) { new vm.SourceTextModule(code); }
      else { vm.compileFunction(code, ['exports', 'require', 'module', '__filename', '__dirname']); }
      return true;
    } catch (e) { return !(e instanceof SyntaxError); }
  });
  process.stdout.write(JSON.stringify(out));
});
"""


def _is_esm(rel: str, text: str) -> bool:
    return rel.endswith(".mjs") or bool(re.search(r"(?m)^(?:import|export)\b", mask(text)))


def node_parses(sources: list[tuple[str, str]]) -> list[bool]:
    """Whether node compiles each (path, text): CommonJS as a module wrapper function, ES
    modules (``.mjs``, or ``import``/``export`` at a line start) as a module. One node process."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("checking JavaScript breakages needs node on PATH")
    if not sources:
        return []
    payload = json.dumps([[t, _is_esm(r, t)] for r, t in sources])
    proc = subprocess.run(
        [node, "--experimental-vm-modules", "--no-warnings", "-e", _CHECK],
        input=payload,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"node could not check the breakages: {proc.stderr.strip()[-500:]}")
    return [bool(x) for x in json.loads(proc.stdout)]


def breakages(files: dict[str, str], test_text: str, seed: int = 0) -> dict[str, list[Breakage]]:
    """Every candidate breakage of the given JavaScript sources and ``package.json``, by
    category, in python_breakages.interleave's seeded order. ``test_text`` (the project's
    tests) limits function-level edits to functions the tests name (no limit when it names
    none). A syntax candidate node compiles, or another that it does not, is dropped."""
    called = set(re.findall(r"[A-Za-z_$][\w$]*", test_text))
    found: list[Breakage] = []
    for rel in sorted(files):
        f = MaskedFile(rel, files[rel], mask)
        if rel.rsplit("/", 1)[-1] == _PACKAGE_JSON:
            cands = list(_package_json(f))
        elif rel.endswith(JS_SUFFIXES):
            cands = _source_breakages(f, called)
        else:
            continue
        found += distinct(cands)
    code = [b for b in found if b.path.endswith(JS_SUFFIXES)]
    ok = dict(zip(map(id, code), node_parses([(b.path, b.broken) for b in code]), strict=True))
    kept = [b for b in found if b.category == "config" or (b.category == "syntax") != ok[id(b)]]
    return interleave(kept, seed)

"""Generate the bundled repair-task corpus from the seed projects.

    python -m jaxrepair.data.tasks.generate            # write jaxrepair/data/tasks/corpus/
    python -m jaxrepair.data.tasks.generate --check    # only report how many tasks would be made

Every task is ``<id>/{task.toml, repo/, fix.patch}``: ``repo/`` is a seed project with one
breakage injected, ``fix.patch`` a unified diff (``-p1``) that repairs it, and ``issue`` the
tail of the real failing build output. Breakages follow real build failures: dependency API
drift between pinned versions (code written for one version, pins saying another), import
errors, syntax errors, wrong signatures and types, logic bugs caught by the (correct) tests,
and broken build configuration. Every candidate is run here (broken must fail, fixed must
pass); candidates that do not fail are dropped. Generation is deterministic (seeded), and the
train/test split is by seed project so no test task shares code with a training task.

The local check runs the build in a temporary copy with the pinned package *sources* on
PYTHONPATH; ``jaxrepair envs validate`` later re-checks every task in the real sandbox.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS_DIR = HERE / "seeds"
PACKAGES_DIR = HERE / "packages"
CORPUS_DIR = HERE / "corpus"
GENERATOR_SEED = 20240611
CORPUS_FORMAT = "1"
SITE = "/opt/jaxrepair/deps/site"  # where the sandbox mounts the pinned packages

PY_BUILD = ("python -m pytest -q",)
MAKE_BUILD = ("make test",)


@dataclass(frozen=True)
class SeedInfo:
    build_system: str  # "python" | "make"
    split: str  # "train" | "test"


SEEDS: dict[str, SeedInfo] = {
    "blogkit": SeedInfo("python", "train"),
    "recipes": SeedInfo("python", "train"),
    "ledger": SeedInfo("python", "train"),
    "inventory": SeedInfo("python", "test"),
    "cstr": SeedInfo("make", "train"),
    "calc": SeedInfo("make", "test"),
}

# Tasks per category per seed (upper bounds; fewer when a seed has fewer failing candidates).
QUOTA = {
    "python": {"dependency": 7, "import": 4, "syntax": 4, "signature": 3, "type": 2, "test": 6, "config": 4},
    "make": {"import": 4, "syntax": 5, "signature": 4, "type": 2, "test": 9, "config": 6},
}

Tree = dict[str, str]


@dataclass
class Candidate:
    category: str
    kind: str  # operator name, e.g. "missing-colon"
    broken: Tree
    fixed: Tree
    note: str = ""
    extra_relevant: tuple[str, ...] = field(default=())


# ----------------------------------------------------------------------------- trees


def read_tree(root: Path) -> Tree:
    """All text files of a seed (build outputs and caches skipped), relative posix paths."""
    out: Tree = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir() or "__pycache__" in rel or rel.startswith("build/") or rel.endswith(".pyc"):
            continue
        out[rel] = p.read_text()
    return out


def write_tree(tree: Tree, root: Path) -> None:
    for rel, text in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def tree_hash(tree: Tree) -> str:
    h = hashlib.sha256()
    for rel in sorted(tree):
        h.update(rel.encode() + b"\0" + tree[rel].encode() + b"\0")
    return h.hexdigest()


def unified_diff(old: Tree, new: Tree) -> str:
    """A ``diff -ruN``-style patch (a/ and b/ prefixes, applies with -p1) from old to new."""
    chunks = []
    for rel in sorted(set(old) | set(new)):
        a, b = old.get(rel), new.get(rel)
        if a == b:
            continue
        a_lines = (a or "").splitlines(keepends=True)
        b_lines = (b or "").splitlines(keepends=True)
        diff = list(
            difflib.unified_diff(
                a_lines,
                b_lines,
                fromfile="/dev/null" if a is None else f"a/{rel}",
                tofile="/dev/null" if b is None else f"b/{rel}",
                n=3,
            )
        )
        fixed = []
        for line in diff:
            if not line.endswith("\n"):
                line += "\n\\ No newline at end of file\n"
            fixed.append(line)
        mode = "new file mode 100644\n" if a is None else "deleted file mode 100644\n" if b is None else ""
        chunks.append(f"diff --git a/{rel} b/{rel}\n{mode}" + "".join(fixed))
    return "".join(chunks)


def changed_files(old: Tree, new: Tree) -> list[str]:
    return sorted(r for r in set(old) | set(new) if old.get(r) != new.get(r))


def replace_line(text: str, lineno: int, new_line: str | None) -> str:
    """Replace (or delete, when None) 1-based line ``lineno``."""
    lines = text.splitlines(keepends=True)
    if new_line is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = new_line
    return "".join(lines)


# ----------------------------------------------------------------------------- pins


_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)$")


def read_pins(tree: Tree) -> dict[str, str]:
    pins = {}
    for line in tree.get("requirements.txt", "").splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def with_pin(tree: Tree, name: str, version: str) -> Tree:
    lines = []
    for line in tree["requirements.txt"].splitlines():
        m = _PIN.match(line.strip())
        lines.append(f"{name}=={version}" if m and m.group(1) == name else line)
    return {**tree, "requirements.txt": "\n".join(lines) + "\n"}


def package_versions(name: str) -> list[str]:
    d = PACKAGES_DIR / name
    if not d.is_dir():
        return []
    return sorted((p.name for p in d.iterdir() if (p / "pyproject.toml").is_file()), key=_vkey)


def _vkey(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else 0 for x in v.split("."))


# API drift rules: code written for version A rewritten for version B (adjacent versions).
# Each rule is (regex, replacement); seeds call these APIs with simple arguments.
_A = r"[^(),]+"
DRIFT: dict[tuple[str, str, str], list[tuple[str, str]]] = {
    ("slugkit", "2.0.0", "1.0.0"): [
        (rf"slugkit\.make_slug\(({_A}), separator=({_A})\)", r"slugkit.slugify(\1, \2)"),
        (rf"slugkit\.make_slug\(({_A})\)", r"slugkit.slugify(\1)"),
        (rf"slugkit\.word_stats\(({_A})\)\[\"words\"\]", r"slugkit.word_count(\1)"),
    ],
    ("slugkit", "1.0.0", "2.0.0"): [
        (rf"slugkit\.slugify\(({_A}), ({_A})\)", r"slugkit.make_slug(\1, separator=\2)"),
        (rf"slugkit\.slugify\(({_A})\)", r"slugkit.make_slug(\1)"),
        (rf"slugkit\.word_count\(({_A})\)", r'slugkit.word_stats(\1)["words"]'),
    ],
    ("unitconv", "3.0.0", "2.0.0"): [
        (rf"convert\(({_A}), src=({_A}), dst=({_A})\)\.value", r"convert(\1, \2, \3)"),
    ],
    ("unitconv", "2.0.0", "3.0.0"): [
        (r"convert\(([^(),=]+), ([^(),=]+), ([^(),=]+)\)", r"convert(\1, src=\2, dst=\3).value"),
    ],
    ("unitconv", "2.0.0", "1.0.0"): [
        (r"from unitconv\.core import convert", "from unitconv import convert"),
    ],
    ("unitconv", "1.0.0", "2.0.0"): [
        (r"from unitconv import convert", "from unitconv.core import convert"),
    ],
    ("confparse", "2.0.0", "1.0.0"): [
        (r"confparse\.loads\(", "confparse.parse("),
        (rf"cfg\.get\(({_A}), ({_A}), ({_A})\)", r"cfg.get(\1, {}).get(\2, \3)"),
        (rf"cfg\.get\(({_A}), ({_A})\)", r"cfg[\1][\2]"),
        (r"in cfg\.sections\(\):", "in cfg:"),
    ],
    ("confparse", "1.0.0", "2.0.0"): [
        (r"confparse\.parse\(", "confparse.loads("),
        (rf"cfg\.get\(({_A}), \{{\}}\)\.get\(({_A}), ({_A})\)", r"cfg.get(\1, \2, \3)"),
        (r"cfg\[([^\[\]]+)\]\[([^\[\]]+)\]", r"cfg.get(\1, \2)"),
        (r"in cfg:", "in cfg.sections():"),
    ],
}


def port_code(text: str, package: str, src: str, dst: str) -> str:
    """Rewrite code written against ``package==src`` for ``package==dst`` (chained drift rules)."""
    versions = package_versions(package)
    i, j = versions.index(src), versions.index(dst)
    step = 1 if j > i else -1
    for k in range(i, j, step):
        for pattern, repl in DRIFT[(package, versions[k], versions[k + step])]:
            text = re.sub(pattern, repl, text)
    return text


# ----------------------------------------------------------------------------- local runner


def _clean_output(text: str, workdir: Path) -> str:
    text = text.replace(str(workdir) + "/", "").replace(str(workdir), ".")
    text = re.sub(re.escape(str(PACKAGES_DIR)) + r"/[^/]+/[^/]+/", SITE + "/", text)
    # host interpreter paths -> the sandbox's layout, so issues do not depend on this machine
    text = re.sub(r"/[^\s:'\"]*/site-packages/", SITE + "/", text)
    text = re.sub(r"/[^\s:'\"]*/lib/(python3\.\d+)/", r"/usr/lib/\1/", text)
    text = re.sub(r" in \d+\.\d+s( \(\d+:\d+:\d+\))?", "", text)
    text = re.sub(r"0x[0-9a-f]{6,}", "0x7f0000000000", text)
    text = re.sub(r"/tmp/cc\w{6}\.o", "/tmp/ccXXXXXX.o", text)  # gcc's temporary objects
    return text


def run_build(tree: Tree, build_system: str, timeout_s: float = 120.0) -> tuple[int, str]:
    """Run the seed's build on ``tree`` in a temp dir: (exit code, cleaned output)."""
    with tempfile.TemporaryDirectory(prefix="jaxrepair-gen-") as tmp:
        work = Path(tmp) / "repo"
        write_tree(tree, work)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
        # a fixed hash seed: pytest's diffs of dicts and sets are ordered by hash
        env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0", LC_ALL="C.UTF-8", LANG="C.UTF-8")
        if build_system == "python":
            paths = []
            for name, version in read_pins(tree).items():
                versions = package_versions(name)
                if version not in versions:
                    return 1, (
                        f"ERROR: Could not find a version that satisfies the requirement "
                        f"{name}=={version} (from versions: {', '.join(versions) or 'none'})\n"
                        f"ERROR: No matching distribution found for {name}=={version}\n"
                    )
                paths.append(str(PACKAGES_DIR / name / version))
            env["PYTHONPATH"] = os.pathsep.join(paths)
            env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
            commands = PY_BUILD
        else:
            commands = MAKE_BUILD
        out = []
        for cmd in commands:
            try:
                proc = subprocess.run(
                    cmd, shell=True, cwd=work, env=env, capture_output=True, text=True,
                    timeout=timeout_s,
                )
            except subprocess.TimeoutExpired:
                return 124, "".join(out) + f"\n[timed out after {timeout_s:g}s]\n"
            out.append(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                return proc.returncode, _clean_output("".join(out), work)
        return 0, _clean_output("".join(out), work)


# ----------------------------------------------------------------------------- operators


def _src_files(tree: Tree, build_system: str) -> list[str]:
    if build_system == "python":
        return [r for r in sorted(tree) if r.startswith("src/") and r.endswith(".py")]
    return [r for r in sorted(tree) if r.startswith("src/") and r.endswith(".c")]


def _line_sites(text: str, pattern: str) -> list[int]:
    return [i for i, line in enumerate(text.splitlines(), 1) if re.search(pattern, line)]


def py_syntax(tree: Tree) -> list[Candidate]:
    out = []
    for rel in _src_files(tree, "python"):
        text = tree[rel]
        lines = text.splitlines(keepends=True)
        for n in _line_sites(text, r"^\s*(def|if|elif|for|while|class|with|try|except|else)\b.*:\s*$"):
            new = re.sub(r":(\s*)$", r"\1", lines[n - 1])
            out.append(Candidate("syntax", "missing-colon", {**tree, rel: replace_line(text, n, new)}, tree))
        for n in _line_sites(text, r"^\s+[^#\s].*\)\s*$"):
            line = lines[n - 1]
            if line.count("(") == line.count(")") and line.count("(") >= 1:
                idx = line.rstrip().rfind(")")
                new = line[:idx] + line[idx + 1 :]
                out.append(Candidate("syntax", "unclosed-paren", {**tree, rel: replace_line(text, n, new)}, tree))
        for n in _line_sites(text, r"^\s+return\b"):
            new = lines[n - 1].replace("return", "retrun", 1)
            if "retrun " in new:
                out.append(Candidate("syntax", "misspelled-keyword", {**tree, rel: replace_line(text, n, new)}, tree))
        for n in _line_sites(text, r"^ {8,}\S"):
            prev = lines[n - 2] if n >= 2 else ""
            if prev.rstrip().endswith((",", "(", "[", "{", "\\")) or not prev.strip():
                continue
            new = lines[n - 1][2:]
            out.append(Candidate("syntax", "bad-indent", {**tree, rel: replace_line(text, n, new)}, tree))
    return out


def py_import(tree: Tree) -> list[Candidate]:
    out = []
    for rel in _src_files(tree, "python"):
        text = tree[rel]
        lines = text.splitlines(keepends=True)
        for n, line in enumerate(lines, 1):
            m = re.match(r"^from ([\w.]+) import (\w+)(.*)$", line.rstrip("\n"))
            if m and m.group(1) != "__future__":
                mod, name, rest = m.groups()
                last = mod.rsplit(".", 1)[-1]
                typo_mod = mod[: len(mod) - len(last)] + (last + "s" if not last.endswith("s") else last[:-1])
                out.append(Candidate("import", "wrong-module", {**tree, rel: replace_line(text, n, f"from {typo_mod} import {name}{rest}\n")}, tree))
                typo_name = name[:-1] if len(name) > 4 else name + "s"
                out.append(Candidate("import", "wrong-name", {**tree, rel: replace_line(text, n, f"from {mod} import {typo_name}{rest}\n")}, tree))
            m = re.match(r"^import (\w+)$", line.rstrip("\n"))
            if m:
                mod = m.group(1)
                uses = len(re.findall(rf"\b{mod}\.", text))
                if uses:
                    out.append(Candidate("import", "missing-import", {**tree, rel: replace_line(text, n, None)}, tree))
                if mod not in sys.stdlib_module_names:
                    typo = mod[:4] + "_" + mod[4:]
                    out.append(Candidate("import", "wrong-module", {**tree, rel: replace_line(text, n, f"import {typo}\n")}, tree))
    return out


def py_signature(tree: Tree) -> list[Candidate]:
    out = []
    for rel in _src_files(tree, "python"):
        text = tree[rel]
        lines = text.splitlines(keepends=True)
        for n, line in enumerate(lines, 1):
            m = re.match(r"^(\s*)def (\w+)\((.*)\):\s*$", line.rstrip("\n"))
            if not m or m.group(2).startswith("_"):
                continue
            indent, fname, params = m.groups()
            plist = [p.strip() for p in params.split(",") if p.strip()]
            # a refactor added a required parameter without updating the callers
            head = [p for p in plist if "=" not in p and not p.startswith("*")]
            tail = plist[len(head) :]
            new_params = ", ".join(head + ["strict"] + tail)
            out.append(Candidate("signature", "added-required-param", {**tree, rel: replace_line(text, n, f"{indent}def {fname}({new_params}):\n")}, tree))
            # two positional parameters swapped
            real = [p for p in head if p not in ("self", "cls")]
            if len(real) >= 2:
                swapped = list(head)
                i, j = head.index(real[0]), head.index(real[1])
                swapped[i], swapped[j] = swapped[j], swapped[i]
                new_params = ", ".join(swapped + tail)
                out.append(Candidate("signature", "swapped-params", {**tree, rel: replace_line(text, n, f"{indent}def {fname}({new_params}):\n")}, tree))
            # a keyword parameter renamed in the definition but not at the call sites
            for p in tail:
                if "=" in p and not p.startswith("*"):
                    pname = p.split("=")[0].strip()
                    if re.search(rf"\b{pname}=", text + "".join(v for k, v in tree.items() if k.startswith("tests/"))):
                        renamed = params.replace(p, p.replace(pname, pname + "_", 1))
                        body_fixed = line.replace(params, renamed)
                        out.append(Candidate("signature", "renamed-keyword", {**tree, rel: replace_line(text, n, body_fixed)}, tree))
    return out


def py_type(tree: Tree) -> list[Candidate]:
    out = []
    for rel in _src_files(tree, "python"):
        text = tree[rel]
        for m in re.finditer(r"\b(int|float|str|list|dict|round)\(", text):
            # remove the conversion call: find the matching paren
            start = m.start()
            depth, k = 0, m.end() - 1
            while k < len(text):
                if text[k] == "(":
                    depth += 1
                elif text[k] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            inner = text[m.end() : k]
            if "\n" in inner or not inner.strip() or (m.group(1) == "round" and "," in inner):
                if m.group(1) == "round" and "," in inner and "\n" not in inner:
                    inner = inner.rsplit(",", 1)[0]
                else:
                    continue
            new = text[:start] + inner + text[k + 1 :]
            out.append(Candidate("type", f"dropped-{m.group(1)}", {**tree, rel: new}, tree))
        for n in _line_sites(text, r"^\s+return \w+$"):
            line = text.splitlines(keepends=True)[n - 1]
            var = line.split("return ", 1)[1].strip()
            new = line.replace(f"return {var}", f"return str({var})")
            out.append(Candidate("type", "wrong-return-type", {**tree, rel: replace_line(text, n, new)}, tree))
    return out


_PY_SWAP = {
    "+": "-", "-": "+", "<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==",
    "//": "/", "*": "+", "and": "or", "or": "and", "True": "False", "False": "True",
    "min": "max", "max": "min", "not": "",
}


def py_logic(tree: Tree) -> list[Candidate]:
    out = []
    for rel in _src_files(tree, "python"):
        text = tree[rel]
        lines = text.splitlines(keepends=True)
        toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
        for i, tok in enumerate(toks):
            (row, col), (erow, ecol) = tok.start, tok.end
            if row != erow or row > len(lines):
                continue
            line = lines[row - 1]
            if line.lstrip().startswith(("def ", "class ", "import ", "from ")):
                continue
            new_tok = None
            if tok.type == tokenize.OP and tok.string in _PY_SWAP:
                prev = toks[i - 1].string if i else ""
                if tok.string == "*" and prev in ("(", ","):
                    continue  # star-args, not multiplication
                new_tok = _PY_SWAP[tok.string]
            elif tok.type == tokenize.NAME and tok.string in _PY_SWAP:
                new_tok = _PY_SWAP[tok.string]
                if tok.string == "not":
                    new_tok = ""
            elif tok.type == tokenize.NUMBER and tok.string in ("0", "1", "2", "100"):
                new_tok = {"0": "1", "1": "0", "2": "1", "100": "10"}[tok.string]
            if new_tok is None:
                continue
            new_line = line[:col] + new_tok + line[ecol:]
            if tok.string == "not":
                new_line = line[:col] + line[ecol:].lstrip()
            out.append(Candidate("test", f"mutated-{tok.string}", {**tree, rel: replace_line(text, row, new_line)}, tree))
    return out


def py_config(tree: Tree) -> list[Candidate]:
    py = tree["pyproject.toml"]
    out = [
        Candidate("config", "wrong-pythonpath", {**tree, "pyproject.toml": py.replace('pythonpath = ["src"]', 'pythonpath = ["lib"]')}, tree),
        Candidate("config", "toml-syntax", {**tree, "pyproject.toml": py.replace('pythonpath = ["src"]', 'pythonpath = ["src"')}, tree),
        Candidate("config", "unknown-option", {**tree, "pyproject.toml": py.replace('addopts = "-p no:cacheprovider"', 'addopts = "-p no:cacheprovider --cov=src"')}, tree),
        Candidate("config", "misspelled-table", {**tree, "pyproject.toml": py.replace("[tool.pytest.ini_options]", "[tool.pytest.ini-options]")}, tree),
        Candidate("config", "unquoted-string", {**tree, "pyproject.toml": re.sub(r'^version = "([^"]+)"', r"version = \1", py, flags=re.M)}, tree),
    ]
    return [c for c in out if c.broken != tree]


def py_dependency(tree: Tree) -> list[Candidate]:
    out = []
    pins = read_pins(tree)
    for pkg, cur in pins.items():
        users = [r for r in _src_files(tree, "python") if re.search(rf"^(import {pkg}|from {pkg}[. ])", tree[r], re.M)]
        for other in package_versions(pkg):
            if other == cur:
                continue
            # the pin drifted (someone bumped or downgraded it); the code is right
            out.append(Candidate("dependency", "pin-drift", with_pin(tree, pkg, other), tree, note=f"{pkg} {cur}->{other}", extra_relevant=tuple(users)))
            # the code was ported to another version but the pin was not changed: fix = pin
            ported = {**tree, **{r: port_code(tree[r], pkg, cur, other) for r in users}}
            if ported != tree:
                out.append(Candidate("dependency", "code-for-other-version", ported, with_pin(ported, pkg, other), note=f"{pkg} code for {other}, pin {cur}", extra_relevant=tuple(users)))
            # one module still written against the other version: fix = adapt the code
            for r in users:
                one = {**tree, r: port_code(tree[r], pkg, cur, other)}
                if one != tree and (len(users) > 1 or ported == tree):
                    out.append(Candidate("dependency", "stale-api-call", one, tree, note=f"{r} uses {pkg} {other} API", extra_relevant=("requirements.txt",)))
        # a pin to a version that does not exist in the index
        major = cur.split(".")[0]
        bogus = f"{major}.1.0" if f"{major}.1.0" not in package_versions(pkg) else f"{major}.9.0"
        out.append(Candidate("dependency", "missing-version", with_pin(tree, pkg, bogus), tree, note=f"{pkg}=={bogus}", extra_relevant=tuple(users)))
    return out


# ---- C operators


def _c_code_lines(text: str) -> list[int]:
    """1-based numbers of indented code lines (function bodies), no preprocessor or comments."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if line.startswith((" ", "\t")) and s and not s.startswith(("#", "/*", "*", "//")):
            out.append(i)
    return out


def c_syntax(tree: Tree) -> list[Candidate]:
    out = []
    for rel in _src_files(tree, "make"):
        text = tree[rel]
        lines = text.splitlines(keepends=True)
        for n in _c_code_lines(text):
            line = lines[n - 1]
            if line.rstrip().endswith(";") and not line.strip().startswith("for"):
                out.append(Candidate("syntax", "missing-semicolon", {**tree, rel: replace_line(text, n, line.rstrip()[:-1] + "\n")}, tree))
            if line.rstrip().endswith(") {"):
                out.append(Candidate("syntax", "missing-paren", {**tree, rel: replace_line(text, n, line.rstrip()[:-3] + " {\n")}, tree))
        for n, line in enumerate(lines, 1):
            if line.rstrip() == "}":
                out.append(Candidate("syntax", "missing-brace", {**tree, rel: replace_line(text, n, None)}, tree))
    return out


def c_import(tree: Tree) -> list[Candidate]:
    out = []
    for rel in [r for r in sorted(tree) if r.startswith("src/") and r.endswith(".c")]:
        text = tree[rel]
        for n, line in enumerate(text.splitlines(keepends=True), 1):
            m = re.match(r'#include ([<"])([\w./]+)\.h[>"]', line)
            if not m:
                continue
            out.append(Candidate("import", "missing-include", {**tree, rel: replace_line(text, n, None)}, tree))
            if m.group(1) == '"':
                out.append(Candidate("import", "wrong-header", {**tree, rel: replace_line(text, n, line.replace(".h", "s.h"))}, tree))
    return out


_C_FUNC = re.compile(r"^(static )?(int|size_t|double|void|char \*|CalcStatus) (\w+)\((.*)\) \{$")


def c_signature(tree: Tree) -> list[Candidate]:
    out = []
    for rel in _src_files(tree, "make"):
        text = tree[rel]
        for n, line in enumerate(text.splitlines(keepends=True), 1):
            m = _C_FUNC.match(line.rstrip("\n"))
            if not m or m.group(1):
                continue
            static, ret, name, params = m.groups()
            new_ret = {"int": "long", "size_t": "int", "double": "float", "void": "int", "char *": "const char *", "CalcStatus": "int"}[ret]
            out.append(Candidate("signature", "changed-return-type", {**tree, rel: replace_line(text, n, f"{new_ret} {name}({params}) {{\n")}, tree))
            plist = [p.strip() for p in params.split(",")]
            if plist and plist != ["void"]:
                extra = ", ".join(plist + ["int flags"])
                out.append(Candidate("signature", "added-param", {**tree, rel: replace_line(text, n, f"{ret} {name}({extra}) {{\n")}, tree))
            if len(plist) >= 2:
                out.append(Candidate("signature", "dropped-param", {**tree, rel: replace_line(text, n, f"{ret} {name}({', '.join(plist[:-1])}) {{\n")}, tree))
    return out


def c_type(tree: Tree) -> list[Candidate]:
    out = []
    for rel in _src_files(tree, "make"):
        text = tree[rel]
        lines = text.splitlines(keepends=True)
        for n in _c_code_lines(text):
            line = lines[n - 1]
            m = re.match(r"^(\s+)(double|size_t|char|Stack|Token|CalcStatus) (\w.*;)\s*$", line)
            if m:
                new_t = {"double": "int", "size_t": "char *", "char": "char *", "Stack": "Stack *", "Token": "Token *", "CalcStatus": "char *"}[m.group(2)]
                out.append(Candidate("type", "wrong-local-type", {**tree, rel: replace_line(text, n, f"{m.group(1)}{new_t} {m.group(3)}\n")}, tree))
    return out


_C_TOKEN = re.compile(r'//.*|/\*.*?\*/|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|->|\+\+|--|<=|>=|==|!=|&&|\|\||[<>+\-*]|\b\d+\b|\w+|\S')
_C_SWAP = {
    "<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==", "+": "-", "-": "+",
    "&&": "||", "||": "&&", "++": "--", "--": "++", "0": "1", "1": "0", "2": "1", "*": "+",
}


def c_logic(tree: Tree) -> list[Candidate]:
    out = []
    for rel in _src_files(tree, "make"):
        text = tree[rel]
        lines = text.splitlines(keepends=True)
        for n in _c_code_lines(text):
            line = lines[n - 1]
            for m in _C_TOKEN.finditer(line):
                tok = m.group(0)
                if tok not in _C_SWAP:
                    continue
                before = line[: m.start()].rstrip()
                if tok == "*" and (not before or before[-1] in "(,=" or re.search(r"\b(char|double|int|Token|Stack)$", before)):
                    continue  # pointer declarations and dereferences, not multiplication
                if tok in ("-", "+") and (not before or before[-1] in "(,=" or before.endswith("return")):
                    continue  # unary signs
                new = line[: m.start()] + _C_SWAP[tok] + line[m.end() :]
                out.append(Candidate("test", f"mutated-{tok}", {**tree, rel: replace_line(text, n, new)}, tree))
    return out


def c_config(tree: Tree) -> list[Candidate]:
    mk = tree["Makefile"]
    out = []
    m = re.search(r"^SRCS = (.*)$", mk, re.M)
    for src in m.group(1).split():
        new = mk.replace(m.group(0), "SRCS = " + " ".join(s for s in m.group(1).split() if s != src))
        out.append(Candidate("config", "source-missing-from-build", {**tree, "Makefile": new}, tree, extra_relevant=(src,)))
    out.append(Candidate("config", "wrong-include-dir", {**tree, "Makefile": mk.replace("-Iinclude", "-Iincludes")}, tree))
    out.append(Candidate("config", "old-c-standard", {**tree, "Makefile": mk.replace("-std=c11", "-std=c89")}, tree))
    out.append(Candidate("config", "wrong-pattern-rule", {**tree, "Makefile": mk.replace("build/%.o: src/%.c", "build/%.o: source/%.c")}, tree))
    recipe_lines = [i for i, line in enumerate(mk.splitlines(), 1) if line.startswith("\t")]
    for i in recipe_lines[:3]:
        line = mk.splitlines(keepends=True)[i - 1]
        out.append(Candidate("config", "spaces-not-tab", {**tree, "Makefile": replace_line(mk, i, "    " + line[1:])}, tree))
    if "LDLIBS = -lm" in mk:
        out.append(Candidate("config", "missing-library", {**tree, "Makefile": mk.replace("LDLIBS = -lm", "LDLIBS =")}, tree))
    out.append(Candidate("config", "test-target-typo", {**tree, "Makefile": mk.replace("test: build/", "test: bulid/", 1)}, tree))
    return [c for c in out if c.broken != tree]


OPERATORS: dict[str, list[Callable[[Tree], list[Candidate]]]] = {
    "python": [py_dependency, py_import, py_syntax, py_signature, py_type, py_logic, py_config],
    "make": [c_import, c_syntax, c_signature, c_type, c_logic, c_config],
}


# ----------------------------------------------------------------------------- tasks


def issue_text(build_system: str, output: str, max_lines: int = 40, max_chars: int = 3000) -> str:
    cmd = " && ".join(PY_BUILD if build_system == "python" else MAKE_BUILD)
    lines = [ln for ln in output.rstrip().splitlines()]
    tail = "\n".join(lines[-max_lines:])
    if len(tail) > max_chars:
        tail = tail[-max_chars:]
        tail = tail[tail.find("\n") + 1 :]
    return f"The build fails: `{cmd}` exits with an error.\n\nBuild output (tail):\n```\n{tail}\n```\n"


def relevant_files(cand: Candidate, output: str, tree: Tree) -> list[str]:
    files = changed_files(cand.broken, cand.fixed)
    files += [f for f in cand.extra_relevant if f in tree]
    for m in re.finditer(r"((?:src|include|tests)/[\w/]+\.(?:py|c|h))", output):
        if m.group(1) in tree:
            files.append(m.group(1))
    out = list(dict.fromkeys(files))
    return out[:5]


def protected_globs(build_system: str, fix_files: list[str]) -> list[str]:
    globs = ["tests/**"]
    cfg = "pyproject.toml" if build_system == "python" else "Makefile"
    if cfg not in fix_files:
        globs.append(cfg)
    return globs


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def task_toml(tid: str, seed: str, info: SeedInfo, cand: Candidate, issue: str, relevant: list[str], protected: list[str]) -> str:
    build = PY_BUILD if info.build_system == "python" else MAKE_BUILD
    pins = read_pins(cand.broken)
    image = "jaxrepair/python:3.11" if info.build_system == "python" else "jaxrepair/make:gcc12"
    lines = [
        f"id = {_toml_str(tid)}",
        f"category = {_toml_str(cand.category)}",
        f"kind = {_toml_str(cand.kind)}",
        f"seed_project = {_toml_str(seed)}",
        f"build_system = {_toml_str(info.build_system)}",
        f"split = {_toml_str(info.split)}",
        f"build = [{', '.join(_toml_str(b) for b in build)}]",
        "timeout_s = 120",
        f"protected = [{', '.join(_toml_str(p) for p in protected)}]",
        f"relevant_files = [{', '.join(_toml_str(p) for p in relevant)}]",
        f"issue = {_toml_str(issue)}",
        "",
        "[dependencies]",
        *[f"{k} = {_toml_str(v)}" for k, v in pins.items()],
        "",
        "[sandbox]",
        f"image = {_toml_str(image)}",
        "",
    ]
    return "\n".join(lines)


def generate_seed(seed: str, info: SeedInfo, rng: random.Random, verbose: bool = False) -> list[tuple[Candidate, str]]:
    """Checked (candidate, broken build output) pairs for one seed, within the quotas."""
    tree = read_tree(SEEDS_DIR / seed)
    code, out = run_build(tree, info.build_system)
    if code != 0:
        raise RuntimeError(f"seed {seed} does not pass its own build:\n{out[-3000:]}")
    passing = {tree_hash(tree)}
    chosen: list[tuple[Candidate, str]] = []
    seen_broken: set[str] = set()
    by_cat: dict[str, list[Candidate]] = {}
    for op in OPERATORS[info.build_system]:
        for cand in op(tree):
            by_cat.setdefault(cand.category, []).append(cand)
    for cat in sorted(by_cat):
        cands = by_cat[cat]
        rng.shuffle(cands)
        # spread over operator kinds: round-robin over kinds in shuffled order
        kinds: dict[str, list[Candidate]] = {}
        for c in cands:
            kinds.setdefault(c.kind, []).append(c)
        order = []
        while any(kinds.values()):
            for k in sorted(kinds):
                if kinds[k]:
                    order.append(kinds[k].pop(0))
        quota = QUOTA[info.build_system].get(cat, 0)
        got = 0
        for cand in order:
            if got >= quota:
                break
            h = tree_hash(cand.broken)
            if h in seen_broken or cand.broken == cand.fixed:
                continue
            seen_broken.add(h)
            code, out = run_build(cand.broken, info.build_system)
            if code == 0:
                continue  # an equivalent mutant: the tests do not notice it
            if "timed out" in out[-200:]:
                continue
            fh = tree_hash(cand.fixed)
            if fh not in passing:
                fcode, fout = run_build(cand.fixed, info.build_system)
                if fcode != 0:
                    if verbose:
                        print(f"  {seed}/{cat}/{cand.kind}: reference fix fails, dropped", file=sys.stderr)
                    continue
                passing.add(fh)
            chosen.append((cand, out))
            got += 1
        if verbose:
            print(f"  {seed}: {cat}: {got}/{quota} (from {len(cands)} candidates)", file=sys.stderr)
    return chosen


def generate(out_dir: Path, write: bool = True, verbose: bool = True, seeds: list[str] | None = None) -> dict:
    """Generate the corpus; returns a summary {"tasks": n, "by": {(category, build_system): n}}."""
    summary: dict = {"tasks": 0, "by_category": {}, "by_build_system": {}, "by_split": {}}
    if write and out_dir.exists():
        if seeds is None:
            shutil.rmtree(out_dir)
        else:  # regenerate only these seeds' tasks
            for d in out_dir.iterdir():
                if d.is_dir() and any(d.name.startswith(f"{s}-") for s in seeds):
                    shutil.rmtree(d)
    for seed in seeds or sorted(SEEDS):
        info = SEEDS[seed]
        rng = random.Random(f"{GENERATOR_SEED}-{seed}")
        pairs = generate_seed(seed, info, rng, verbose=verbose)
        counters: dict[str, int] = {}
        for cand, output in pairs:
            counters[cand.category] = counters.get(cand.category, 0) + 1
            tid = f"{seed}-{cand.category}-{counters[cand.category]:03d}"
            fix = unified_diff(cand.broken, cand.fixed)
            fix_files = changed_files(cand.broken, cand.fixed)
            rel = relevant_files(cand, output, cand.broken)
            toml = task_toml(tid, seed, info, cand, issue_text(info.build_system, output), rel, protected_globs(info.build_system, fix_files))
            if write:
                d = out_dir / tid
                write_tree(cand.broken, d / "repo")
                (d / "fix.patch").write_text(fix)
                (d / "task.toml").write_text(toml)
            summary["tasks"] += 1
            for key, val in (("by_category", cand.category), ("by_build_system", info.build_system), ("by_split", info.split)):
                summary[key][val] = summary[key].get(val, 0) + 1
    if write and seeds is None:
        (out_dir / "MANIFEST.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
        # the corpus version every validation fingerprint carries (reward.py reads VERSION)
        content = read_tree(out_dir)
        content.pop("VERSION", None)
        (out_dir / "VERSION").write_text(f"{CORPUS_FORMAT}+{tree_hash(content)[:12]}\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=CORPUS_DIR, help="output directory (replaced)")
    ap.add_argument("--check", action="store_true", help="run every candidate but write nothing")
    ap.add_argument("--seed-project", action="append", choices=sorted(SEEDS), help="only these seeds")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    summary = generate(args.out, write=not args.check, verbose=not args.quiet, seeds=args.seed_project)
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

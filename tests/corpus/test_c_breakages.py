"""C breakages against the real toolchain: the definitions found are the functions gcc (g++)
emits, every candidate applies and inverts exactly with git apply, syntax and header breaks
do not compile, a logic break compiles and changes what the program prints, and a dropped
object breaks the real make."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from jaxrepair.corpus.c_breakages import breakages, functions
from jaxrepair.envs.reward import apply_patch

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("gcc", "g++", "make", "nm")),
    reason="needs gcc, g++, make and nm",
)

HEADER = """#ifndef TINY_H
#define TINY_H
#include <stddef.h>
int tiny_add(int a, int b);
int tiny_max(int a, int b);
size_t tiny_count(const char *s, char c);
#endif
"""

SOURCE = """/* tiny: a small C library; a < b in a comment is not code */
#include <string.h>
#include "tiny.h"

#define API(name) name

static const int table[3] = { 1, 2, 3 };
struct pair { int x; int y; };

int tiny_add(int a, int b)
{
    return a + b;
}

int API(tiny_max) (int a, int b)
{
    if (a > b) {
        return a;
    }
    return b;
}

size_t tiny_count(const char *s, char c)
{
    size_t n = 0;
    const char *p;
    for (p = s; *p != '\\0'; p++) {
        if (*p == c) {
            n = n + 1;
        }
    }
    return n + (size_t)(table[0] - 1) + strlen("");
}
"""

MAIN = """#include <stdio.h>
#include "tiny.h"

int main(void)
{
    printf("%d %d %d %zu\\n", tiny_add(2, 3), tiny_max(4, 9), tiny_max(9, 4),
           tiny_count("banana", 'a'));
    return 0;
}
"""

MAKEFILE = """CFLAGS=-Wall -O0
OBJS= tiny.o \\
      main.o

tiny_main: $(OBJS)
\t$(CC) $(CFLAGS) -o $@ $(OBJS)
"""

CMAKELISTS = """cmake_minimum_required(VERSION 3.13)
project(tiny C)
set(TINY_SRC tiny.c)  # the library
add_library(tiny ${TINY_SRC})
add_compile_options(-Wall -Wextra)
"""

CPP = """#include <cstring>
namespace tiny {
struct Flag { bool on; };
class Doc {
public:
    Doc(int n);
    int Size() const;
private:
    int _n;
};
Doc::Doc(int n) :
    _n(n)
{
}
int Doc::Size() const
{
    return _n > 0 ? _n : 0;
}
extern "C" {
int tiny_version(void) { return 2; }
}
}
"""

FILES = {"tiny.c": SOURCE, "Makefile": MAKEFILE, "CMakeLists.txt": CMAKELISTS}


def _run(*cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def _defined(obj: Path, cwd: Path) -> set[str]:
    """The functions an object file defines, as nm (demangled) names them, unqualified."""
    out = _run("nm", "-C", "--defined-only", str(obj), cwd=cwd).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[1] in "Tt":
            names.add(parts[2].split("(")[0].split("::")[-1])
    return names


def test_functions_are_the_definitions_the_compiler_emits(tmp_path):
    (tmp_path / "tiny.h").write_text(HEADER)
    (tmp_path / "tiny.c").write_text(SOURCE)
    (tmp_path / "doc.cpp").write_text(CPP)
    assert _run("gcc", "-c", "-O0", "tiny.c", cwd=tmp_path).returncode == 0
    assert _run("g++", "-c", "-O0", "doc.cpp", cwd=tmp_path).returncode == 0
    assert {f.name for f in functions(SOURCE)} == _defined(tmp_path / "tiny.o", tmp_path)
    assert {f.name for f in functions(CPP)} == _defined(tmp_path / "doc.o", tmp_path)


def test_every_breakage_applies_and_inverts_exactly(tmp_path):
    cands = breakages(FILES, MAIN, seed=1)
    assert set(cands) == {"import", "signature", "logic", "type", "syntax", "config"}
    kinds = {b.kind for bs in cands.values() for b in bs}
    assert {
        "remove-include", "misspell-header", "add-parameter", "drop-parameter",
        "swap-parameters", "swap-comparison", "swap-arithmetic", "negate-condition",
        "off-by-one", "change-return-type", "change-parameter-type", "narrow-local-type",
        "missing-semicolon", "missing-brace", "drop-object", "misspell-flag", "drop-source",
        "misspell-variable",
    } <= kinds  # fmt: skip
    repo = tmp_path / "repo"
    repo.mkdir()
    for bs in cands.values():
        for b in bs:
            for rel, text in FILES.items():
                (repo / rel).write_text(text)
            apply_patch(repo, b.break_patch)
            assert (repo / b.path).read_text() == b.broken
            apply_patch(repo, b.fix_patch)
            assert (repo / b.path).read_bytes() == FILES[b.path].encode()


def test_crlf_sources_and_form_feeds_patch_exactly(tmp_path):
    # tinyxml2 ships CRLF sources; old C sources separate sections with form feeds
    text = SOURCE.replace("static const", "\f\nstatic const").replace("\n", "\r\n")
    cands = breakages({"tiny.c": text}, MAIN, seed=0)
    assert {"missing-semicolon", "missing-brace", "swap-arithmetic"} <= {
        b.kind for bs in cands.values() for b in bs
    }
    repo = tmp_path / "repo"
    repo.mkdir()
    for b in (b for bs in cands.values() for b in bs):
        (repo / "tiny.c").write_bytes(text.encode())
        apply_patch(repo, b.break_patch)
        assert (repo / "tiny.c").read_bytes() == b.broken.encode()
        apply_patch(repo, b.fix_patch)
        assert (repo / "tiny.c").read_bytes() == text.encode()


def _compile(tmp_path: Path, source: str, name: str) -> subprocess.CompletedProcess:
    d = tmp_path / name
    d.mkdir()
    (d / "tiny.h").write_text(HEADER)
    (d / "tiny.c").write_text(source)
    (d / "main.c").write_text(MAIN)
    return _run("gcc", "-O0", "-o", "prog", "tiny.c", "main.c", cwd=d)


def test_the_compiler_agrees_with_each_category(tmp_path):
    cands = breakages({"tiny.c": SOURCE}, MAIN, seed=0)
    assert _compile(tmp_path, SOURCE, "orig").returncode == 0
    want = _run(str(tmp_path / "orig" / "prog"), cwd=tmp_path).stdout
    must_fail = [*cands["syntax"], *(b for b in cands["import"] if b.kind == "misspell-header")]
    must_fail += [b for b in cands["signature"] if b.kind in ("add-parameter", "drop-parameter")]
    for i, b in enumerate(must_fail):
        res = _compile(tmp_path, b.broken, f"bad{i}")
        assert res.returncode != 0 and "error" in res.stderr, (b.kind, b.line)
    # a logic break compiles, and the program says something else
    [arith] = [
        b for b in cands["logic"] if b.kind == "swap-arithmetic" and b.function == "tiny_add"
    ]
    assert _compile(tmp_path, arith.broken, "logic").returncode == 0
    got = _run(str(tmp_path / "logic" / "prog"), cwd=tmp_path).stdout
    assert got != want and got.split()[0] == "-1"


def test_a_dropped_object_breaks_the_real_make(tmp_path):
    cands = breakages({"Makefile": MAKEFILE}, "", seed=0)
    drops = [b for b in cands["config"] if b.kind == "drop-object"]
    assert len(drops) == 2
    for i, b in enumerate([None, *drops]):
        d = tmp_path / f"m{i}"
        d.mkdir()
        for rel, text in (("tiny.h", HEADER), ("tiny.c", SOURCE), ("main.c", MAIN)):
            (d / rel).write_text(text)
        (d / "Makefile").write_text(MAKEFILE if b is None else b.broken)
        res = _run("make", "-s", cwd=d)
        assert (res.returncode == 0) == (b is None), res.stderr
        if b is not None:
            assert "undefined reference" in res.stderr


def test_functions_the_tests_never_name_are_left_alone():
    cands = breakages({"tiny.c": SOURCE}, "tiny_add(1, 2)", seed=0)
    funcs = {b.function for c in ("signature", "logic", "type") for b in cands.get(c, [])}
    assert funcs == {"tiny_add"}

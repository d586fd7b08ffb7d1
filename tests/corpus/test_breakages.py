"""Procedural breakages: every candidate is a small edit whose break patch, applied with
git apply, gives exactly the broken file, and whose fix patch gives back the original bytes."""

from __future__ import annotations

import ast

from jaxrepair.corpus.python_breakages import breakages
from jaxrepair.envs.reward import apply_patch

from .conftest import CORE, TESTS


def _run(text: str) -> dict:
    ns: dict = {}
    exec(compile(text, "core.py", "exec"), ns)  # noqa: S102 - the synthetic module only
    return ns


def test_every_breakage_applies_and_inverts_exactly(tmp_path):
    tail = "def scale(a, b=2):\n    return a * b"  # no newline at the end of the file
    files = {"pkg/core.py": CORE, "pkg/tail.py": tail}
    cands = breakages(files, TESTS + " scale", seed=1)
    assert set(cands) == {"import", "signature", "logic", "type", "syntax"}
    kinds = {b.kind for bs in cands.values() for b in bs}
    assert {"remove-import", "misspell-module", "drop-default", "add-parameter"} <= kinds
    assert {
        "swap-parameters",
        "swap-arithmetic",
        "swap-comparison",
        "return-str",
        "return-list",
    } <= kinds
    assert {"missing-colon", "unclosed-call"} <= kinds
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    n = 0
    for bs in cands.values():
        for b in bs:
            for rel, text in files.items():
                (repo / rel).write_text(text)
            apply_patch(repo, b.break_patch)
            assert (repo / b.path).read_text() == b.broken
            apply_patch(repo, b.fix_patch)
            assert (repo / b.path).read_bytes() == files[b.path].encode()
            if b.category == "syntax":
                try:
                    ast.parse(b.broken)
                    raise AssertionError(f"{b.kind} still parses")
                except SyntaxError:
                    pass
            else:
                ast.parse(b.broken)
            n += 1
    assert n >= 20


def test_breakages_change_behaviour_as_named():
    cands = breakages({"core.py": CORE}, TESTS, seed=0)
    by_kind = {}
    for bs in cands.values():
        for b in bs:
            by_kind.setdefault(b.kind, []).append(b)
    [arith] = [b for b in by_kind["swap-arithmetic"] if b.function == "add"]
    assert _run(arith.broken)["add"](2, 3) == -1
    [cmp_] = by_kind["swap-comparison"]
    assert _run(cmp_.broken)["is_big"](100) is False and _run(CORE)["is_big"](100) is True
    [ret] = [b for b in by_kind["return-str"] if b.function == "hypot"]
    assert _run(ret.broken)["hypot"](3, 4) == "5.0"
    swapped = [b for b in by_kind["add-parameter"] if b.function == "add"][0]
    try:
        _run(swapped.broken)["add"](2, 3)
        raise AssertionError("add() accepted two arguments")
    except TypeError as e:
        assert "strict" in str(e)
    removed = [b for b in by_kind["remove-import"]][0]
    assert "import math" not in removed.broken
    # the diff is a few lines, not the whole file
    lines = arith.break_patch.splitlines()
    assert [ln for ln in lines if ln.startswith("-") and not ln.startswith("---")] == [
        "-    return a + b"
    ]
    assert [ln for ln in lines if ln.startswith("+") and not ln.startswith("+++")] == [
        "+    return a - b"
    ]


def test_functions_the_tests_never_name_are_left_alone():
    cands = breakages({"core.py": CORE}, "from core import add", seed=0)
    funcs = {b.function for c in ("signature", "logic", "type") for b in cands.get(c, [])}
    assert funcs == {"add"}

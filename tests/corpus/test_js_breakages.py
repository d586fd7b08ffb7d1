"""JavaScript breakages: the mask keeps code and blanks the rest, every candidate's patches
apply with ``git apply`` and invert exactly, and each category does to a real node run what
its name says (a syntax break does not compile, a misspelt module is not found, a wrong
method is a TypeError, a logic or signature break fails an assertion, ``"type": "module"``
breaks CommonJS)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from jaxrepair.corpus.js_breakages import breakages, functions, mask, node_parses
from jaxrepair.envs.reward import apply_patch

INDEX = """'use strict';

var util = require('./util');

// clamp(value, low, high): a number within [low, high]
function clamp(value, low, high) {
  if (value < low) {
    return low;
  }
  if (value > high) {
    return high;
  }
  return value;
}

var words = function words(text, sep) {
  var out = [];
  text.split(' ').forEach(function (w) {
    if (w.length > 0 && w !== '/') {
      out.push(util.upper(w));
    }
  });
  return out.join(sep);
};

module.exports = {
  clamp: clamp,
  words: words,
  total: (xs) => {
    var n = 0;
    for (var i = 0; i < xs.length; i += 1) {
      n = n + xs[i];
    }
    return n;
  },
};
"""

UTIL = """exports.upper = function upper(s) {
  return s.toUpperCase();
};
"""

PACKAGE = """{
  "name": "fixture",
  "version": "1.0.0",
  "main": "lib/index.js",
  "license": "MIT"
}
"""

TEST = """var assert = require('assert');
var m = require('./');

assert.strictEqual(m.clamp(5, 0, 3), 3);
assert.strictEqual(m.clamp(-1, 0, 3), 0);
assert.strictEqual(m.clamp(2, 0, 3), 2);
assert.strictEqual(m.words('a bc  d', '-'), 'A-BC-D');
assert.strictEqual(m.total([1, 2, 3]), 6);
console.log('ok');
"""

FILES = {"lib/index.js": INDEX, "lib/util.js": UTIL, "package.json": PACKAGE}

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="needs node")


def test_mask_blanks_comments_strings_and_regexes_and_keeps_offsets():
    text = "var a = 'x < y'; // b > c\nvar r = /[/]+>/g.test(s) && a < 2; /* { */\n"
    m = mask(text)
    assert len(m) == len(text) and m.count("\n") == text.count("\n")
    assert "<" not in m[: m.index(";")]  # the string's "<" is blanked
    assert ">" not in m.split("\n")[0] and "{" not in m  # the comments'
    assert "/[/]" not in m and ".test(s) && a < 2" in m  # the regex, not the code after it


def test_functions_are_found_with_the_names_they_are_known_by():
    names = {fn.names for fn in functions(INDEX)}
    assert ("clamp",) in names and ("words", "words") in names
    assert ("total",) in names  # an arrow function, named by its property
    upper = functions(UTIL)
    assert [fn.names for fn in upper] == [("upper", "upper")]
    fn = upper[0]
    assert UTIL[fn.params[0] : fn.params[1]] == "s"
    assert UTIL[fn.body[0]] == "{" and UTIL[fn.body[1]] == "}"


@needs_node
def test_every_breakage_applies_and_inverts_exactly(tmp_path):
    cands = breakages(FILES, TEST)
    assert set(cands) == {"import", "signature", "logic", "type", "syntax", "config"}
    for cat, items in cands.items():
        for b in items:
            assert b.category == cat and b.original == FILES[b.path] != b.broken
            repo = tmp_path / f"{cat}-{b.kind}-{abs(hash(b.broken))}"
            (repo / b.path).parent.mkdir(parents=True)
            (repo / b.path).write_text(b.original)
            apply_patch(repo, b.break_patch)
            assert (repo / b.path).read_text() == b.broken, b.kind
            apply_patch(repo, b.fix_patch)
            assert (repo / b.path).read_text() == b.original, b.kind


@needs_node
def test_only_syntax_breakages_fail_to_compile():
    cands = breakages(FILES, TEST)
    code = [b for items in cands.values() for b in items if b.path.endswith(".js")]
    ok = node_parses([(b.path, b.broken) for b in code])
    for b, parses in zip(code, ok, strict=True):
        assert parses == (b.category != "syntax"), (b.kind, b.line)
    assert node_parses([("a.mjs", "export const x = 1;\n"), ("b.js", "return 1;\n")]) == [
        True,
        True,
    ]


@needs_node
def test_function_level_edits_stay_in_functions_the_tests_name():
    cands = breakages(FILES, "m.clamp(1, 2, 3)")
    fns = {b.function for c in ("signature", "logic", "type") for b in cands.get(c, [])}
    assert fns == {"clamp"}


def _run(tmp_path: Path, edit: dict[str, str]) -> subprocess.CompletedProcess:
    """``node test.js`` over the fixture package with ``edit`` (path -> text) applied."""
    repo = tmp_path / f"r{abs(hash(tuple(edit.items())))}"
    for rel, text in {**FILES, "test.js": TEST, **edit}.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    return subprocess.run(["node", "test.js"], cwd=repo, capture_output=True, text=True, timeout=60)


@needs_node
def test_the_categories_do_what_they_are_named_for(tmp_path):
    clean = _run(tmp_path, {})
    assert clean.returncode == 0 and clean.stdout.strip() == "ok", clean.stderr
    cands = breakages(FILES, TEST)
    seen: dict[str, set[str]] = {}
    for cat, items in cands.items():
        tried: dict[str, int] = {}
        for b in items:
            if b.kind in seen or tried.get(b.kind, 0) >= 4:
                continue  # one caught candidate per kind is enough (each run is a node start)
            tried[b.kind] = tried.get(b.kind, 0) + 1
            res = _run(tmp_path, {b.path: b.broken})
            if res.returncode == 0:
                continue  # not every candidate is caught: the build keeps the caught ones
            err = res.stderr
            seen.setdefault(b.kind, set())
            if cat == "syntax":
                assert "SyntaxError" in err, (b.kind, err[-300:])
            elif b.kind == "misspell-module":
                assert "Cannot find module" in err, err[-300:]
            elif cat == "type":  # a method the value lacks, or a value of the wrong type
                assert "TypeError" in err or "AssertionError" in err, (b.kind, err[-300:])
            elif cat in ("logic", "signature"):
                assert "SyntaxError" not in err, (b.kind, err[-300:])
            elif b.kind == "set-type-module":
                assert "ES module" in err, err[-300:]
            elif b.kind == "misspell-main":
                assert "Cannot find module" in err, err[-300:]
            seen[b.kind].add(err.splitlines()[0] if err else "")
    # every category has a candidate that node's run catches
    caught_cats = {c for c, items in cands.items() for b in items if b.kind in seen}
    assert caught_cats == {"import", "signature", "logic", "type", "syntax", "config"}
    assert {"swap-comparison", "unclosed-call", "set-type-module", "misspell-main"} <= set(seen)

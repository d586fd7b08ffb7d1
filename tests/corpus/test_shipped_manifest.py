"""The shipped real-world manifest parses (no network: records only), spans at least five
upstream projects pinned by hash as the project list pins them, keeps each project's tasks in
one split, and every fix patch is the inverse of its break patch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import jaxrepair
from jaxrepair.corpus.manifest import read_manifest
from jaxrepair.corpus.projects import PROJECTS

SHIPPED = Path(jaxrepair.__file__).parent / "data" / "corpus_pypi.jsonl"


def _changed(patch: str, sign: str) -> list[str]:
    head = sign * 3
    return [ln[1:] for ln in patch.splitlines() if ln.startswith(sign) and not ln.startswith(head)]


def test_the_shipped_manifest_is_well_formed():
    records = read_manifest(SHIPPED)
    assert len({r.project for r in records}) >= 5
    for r in records:
        assert r.source == PROJECTS[r.project].source and r.source.hash.startswith("sha256:")
        assert r.split == PROJECTS[r.project].split  # a project's tasks never straddle splits
        assert _changed(r.fix_patch, "-") == _changed(r.break_patch, "+"), r.id
        assert _changed(r.fix_patch, "+") == _changed(r.break_patch, "-"), r.id
    assert set(Counter(r.category for r in records)) == {
        "import",
        "signature",
        "logic",
        "type",
        "syntax",
    }

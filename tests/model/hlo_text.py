"""Reading compiled HLO text in tests."""

from __future__ import annotations

import re


def dot_operand_types(hlo: str) -> list[list[str]]:
    """Element types of every dot's operands in compiled HLO text (the operands are named
    instructions, mostly the parameters of the fusion the dot sits in)."""
    types = {}
    for m in re.finditer(r"%(\S+) = (\w+)\[[^\]]*\]\S* ", hlo):
        types[m.group(1)] = m.group(2)
    out = []
    for m in re.finditer(r"\bdot\(%([^,\s]+), %([^,\s)]+)\)", hlo):
        out.append([types.get(m.group(1), "?"), types.get(m.group(2), "?")])
    return out

"""Transparent huge pages for host memory on Linux: the `jaxrepair` command runs with glibc's
`glibc.malloc.hugetlb=1` tunable.

Why: XLA:CPU allocates each program's buffers per execution, and glibc serves allocations of
more than 32 MiB with a fresh `mmap`, so every decode step, prefill and training step faults in
its buffers again 4 KiB at a time (on a 2-core VM: 5 million page faults in ten steps of a 58M
model). With the tunable, malloc asks for transparent huge pages (`madvise`), 512 times fewer
faults; a paged-attention decode step of 64 rows ran 2-4x faster. The tunable is read only when
a process starts, so the command re-executes itself once with it set. Nothing changes where
the kernel has transparent huge pages off or glibc is older than 2.35 (the tunable is then
ignored). `JAXREPAIR_HUGEPAGES=0` opts out.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "JAXREPAIR_HUGEPAGES"
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def available() -> bool:
    """Linux with glibc >= 2.35 and transparent huge pages not switched off."""
    if sys.platform != "linux":
        return False
    lib, version = platform.libc_ver()
    if lib != "glibc":
        return False
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
        mode = _THP.read_text()
    except (ValueError, OSError):
        return False
    return (major, minor) >= (2, 35) and "[never]" not in mode


def wanted(env: Mapping[str, str]) -> bool:
    return env.get(OPT_OUT, "1") != "0" and available()


def add_tunables(current: str, tunables: str) -> str:
    """GLIBC_TUNABLES `current` plus each of `tunables` ("name=value:...") whose name it does
    not set yet: a setting already there wins."""
    extra = [kv for kv in tunables.split(":") if kv.split("=")[0] + "=" not in current]
    return ":".join(x for x in (current, *extra) if x)


def with_tunable(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the tunable added to GLIBC_TUNABLES (unless opted out or unavailable)."""
    out = dict(env)
    if wanted(env):
        out["GLIBC_TUNABLES"] = add_tunables(out.get("GLIBC_TUNABLES", ""), TUNABLE)
    return out


def reexec_with_hugepages() -> None:
    """Replace this process with itself under the tunable when it is wanted and missing
    (a no-op otherwise, and always a no-op the second time)."""
    env = with_tunable(os.environ)
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)

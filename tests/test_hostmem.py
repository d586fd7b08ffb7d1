"""The command's huge-page re-execution (jaxrepair.hostmem), in real subprocesses: the tunable
reaches the re-executed process, the opt-out is honoured, and the tunable really cuts the page
faults of large allocations (counted by the kernel); so does the benchmarks' allocator."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jaxrepair import hostmem

SHOW = (
    "import os; from jaxrepair.hostmem import reexec_with_hugepages; reexec_with_hugepages(); "
    "print(os.environ.get('GLIBC_TUNABLES', ''))"
)

# Minor page faults of 20 glibc allocations of 256 MiB, each written once (through libc's own
# malloc, as XLA allocates; numpy asks for huge pages itself).
FAULTS = r"""
import ctypes, resource
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    p = libc.malloc(256 << 20)
    ctypes.memset(p, 1, 256 << 20)
    libc.free(p)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostmem.OPT_OUT)}
    return {**env, **extra}


def _faults(env: dict[str, str]) -> int:
    """The kernel's count of minor page faults of FAULTS run under `env`."""
    out = subprocess.run(
        [sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


def test_with_tunable_adds_once_keeps_others_and_honours_the_opt_out():
    if not hostmem.available():
        assert hostmem.with_tunable({"A": "1"}) == {"A": "1"}
        return
    assert hostmem.with_tunable({})["GLIBC_TUNABLES"] == hostmem.TUNABLE
    both = hostmem.with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert both["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{hostmem.TUNABLE}"
    set_by_user = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert hostmem.with_tunable(set_by_user) == set_by_user
    assert "GLIBC_TUNABLES" not in hostmem.with_tunable({hostmem.OPT_OUT: "0"})


@pytest.mark.skipif(not hostmem.available(), reason="needs Linux, glibc >= 2.35 and THP")
def test_the_process_reexecutes_itself_with_the_tunable():
    out = subprocess.run(
        [sys.executable, "-c", SHOW], env=_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == hostmem.TUNABLE
    off = subprocess.run(
        [sys.executable, "-c", SHOW],
        env=_env(**{hostmem.OPT_OUT: "0"}),
        capture_output=True,
        text=True,
        check=True,
    )
    assert off.stdout.strip() == ""


@pytest.mark.skipif(not hostmem.available(), reason="needs Linux, glibc >= 2.35 and THP")
def test_the_tunable_cuts_page_faults_of_large_allocations():
    plain = _faults(_env())
    huge = _faults(_env(GLIBC_TUNABLES=hostmem.TUNABLE))
    assert plain > 20 * 60_000  # 4 KiB pages: about 65k faults per 256 MiB
    assert huge * 4 < plain, (plain, huge)


@pytest.mark.skipif(not hostmem.available(), reason="needs Linux, glibc >= 2.35 and THP")
def test_the_benchmarks_allocator_reuses_freed_blocks():
    """Every benchmark subprocess runs with the command's huge pages plus a heap that keeps
    large freed blocks: the 20 allocations then fault their pages in once, not 20 times."""
    from benchmarks._common import bench_env

    env = bench_env(_env())
    assert env["GLIBC_TUNABLES"].startswith(hostmem.TUNABLE)
    huge = _faults(_env(GLIBC_TUNABLES=hostmem.TUNABLE))
    kept = _faults(env)
    assert kept * 10 < huge, (huge, kept)
    mine = bench_env(_env(GLIBC_TUNABLES="glibc.malloc.mmap_max=5"))["GLIBC_TUNABLES"]
    assert "glibc.malloc.mmap_max=5" in mine and "mmap_max=0" not in mine

"""Test support: environment variables set for the duration of a fixture."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Less LLVM optimisation of XLA:CPU's kernels: the same HLO programs (fusion, sharding, buffer
# assignment), compiled in about half the time. The suite's tiny models are compile-bound;
# it ran 25-30% faster on 2 cores.
CODEGEN_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")


def one_device_xla_flags() -> str:
    """XLA_FLAGS for a subprocess on one CPU device (or with its own count appended): the
    suite's, minus the device count."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    return " ".join(f for f in flags if "force_host_platform_device_count" not in f)


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set `values` in os.environ, then restore what was there (or unset it)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

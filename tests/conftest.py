"""Test-session setup shared by every test: 8 simulated CPU devices for the sharding tests.

XLA reads XLA_FLAGS once, when jax initialises its backends, so it is set here before any test
module imports jax. The suite also compiles with XLA:CPU's quick code generation
(`CODEGEN_FLAGS`), which subprocesses inherit.
"""

import os

from tests.environ import CODEGEN_FLAGS

_flags = os.environ.get("XLA_FLAGS", "").split()
for _flag in ("--xla_force_host_platform_device_count=8", *CODEGEN_FLAGS):
    if _flag.split("=")[0] not in " ".join(_flags):
        _flags.append(_flag)
os.environ["XLA_FLAGS"] = " ".join(_flags)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

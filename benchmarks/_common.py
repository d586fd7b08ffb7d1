"""Shared benchmark plumbing: one framework per subprocess, medians, the reference config, plots.

JAX and PyTorch in one process slow each other down (thread pools fight over the cores), so
every measurement runs in its own `python -c` subprocess that prints one JSON line.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jaxrepair.hostmem import add_tunables, with_tunable

ROOT = Path(__file__).resolve().parents[1]

# glibc malloc settings every framework's subprocess runs with, on top of the `jaxrepair`
# command's huge pages: large freed blocks stay in the heap (no mmap, no trim), so no framework
# faults its per-step buffers in afresh. Measured in one sitting (58M, 4 x 512 fp32): PyTorch's
# fwd+bwd ran 1.2-1.5x faster with them than with huge pages alone, Tunix's forward 1.1x,
# jaxrepair's unchanged; ratios then compare frameworks, not allocators (docs/decisions.md).
KEEP_FREED_HEAP = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"


def bench_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with the host allocator settings of every benchmark
    subprocess; settings the caller already put in GLIBC_TUNABLES win."""
    out = with_tunable(os.environ if env is None else env)
    out["GLIBC_TUNABLES"] = add_tunables(out.get("GLIBC_TUNABLES", ""), KEEP_FREED_HEAP)
    return out


# The reference config of the benchmarks: 58M parameters, untied head.
REFERENCE_CONFIG: dict[str, Any] = dict(
    vocab_size=32000,
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=64,
    tie_word_embeddings=False,
    max_position_embeddings=4096,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
)


# Frameworks by runtime: torch-based ones get passive OpenMP threads, JAX-based ones the CPU
# platform unless an accelerator is asked for.
TORCH_FRAMEWORKS = ("torch", "vllm")
JAX_FRAMEWORKS = ("jax", "tunix")


def run_json(
    code: str, *args: str, framework: str, timeout: float = 1800, python: str = sys.executable
) -> dict[str, Any]:
    """Run `code` in a fresh interpreter (`python`: a peer's venv) and parse the last stdout
    line as JSON."""
    env = bench_env()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if framework in TORCH_FRAMEWORKS:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    if framework in JAX_FRAMEWORKS:
        env.setdefault("JAX_PLATFORMS", "cpu" if not _has_accelerator_hint() else "")
    proc = subprocess.run(
        [python, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{framework} subprocess failed:\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{framework} subprocess printed no JSON:\n{proc.stdout[-2000:]}")
    return json.loads(lines[-1])


def _has_accelerator_hint() -> bool:
    return bool(os.environ.get("JAXREPAIR_BENCH_ACCEL"))


# Each framework's own matmul peak (2048^2, in the benchmark's dtype), pasted into its
# subprocess code: ratios between frameworks depend on which BLAS each one reaches on this
# CPU (MKL takes a slower path on AMD), so every result carries every framework's peak.
# bfloat16 products have a float32 result, as the models' own: XLA:CPU runs a bf16 result
# at about half the speed on AVX-512 BF16 machines.
JAX_PEAK_CODE = r"""
def matmul_peak(n=2048, dtype="float32"):
    import time, jax, jax.numpy as jnp, numpy as np
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
    f(a).block_until_ready()
    ts = []
    for _ in range(5):
        t0 = time.perf_counter(); f(a).block_until_ready(); ts.append(time.perf_counter() - t0)
    return 2 * n**3 / min(ts)
"""

TORCH_PEAK_CODE = r"""
def matmul_peak(dtype="float32"):
    import time, torch
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    n = 2048
    a = torch.randn(n, n, device=dev, dtype=getattr(torch, dtype))
    a @ a
    ts = []
    for _ in range(5):
        if dev == "cuda": torch.cuda.synchronize()
        t0 = time.perf_counter(); a @ a
        if dev == "cuda": torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / min(ts)
"""


def cpu_record() -> dict[str, Any]:
    """CPU model, vendor and core counts of this machine (from /proc/cpuinfo; `platform`
    elsewhere)."""
    fields: dict[str, str] = {}
    physical: set[tuple[str, str]] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        phys = core = ""
        for line in cpuinfo.read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            fields.setdefault(key, value)
            if key == "physical id":
                phys = value
            elif key == "core id":
                core = value
                physical.add((phys, core))
    return {
        "cpu_model": fields.get("model name") or platform.processor() or platform.machine(),
        "cpu_vendor": fields.get("vendor_id", "unknown"),
        "logical_cores": os.cpu_count(),
        "physical_cores": len(physical) or None,
        "usable_cores": len(os.sched_getaffinity(0)) if sys.platform == "linux" else None,
        # the host allocator every framework's subprocess ran with (`run_json`)
        "glibc_tunables": bench_env()["GLIBC_TUNABLES"],
    }


def machine_record(peaks: dict[str, float], dtype: str) -> dict[str, Any]:
    """The machine a result was measured on: the CPU and each framework's matmul peak in
    `dtype`."""
    return {
        **cpu_record(),
        "matmul_peak_dtype": dtype,
        "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
    }


def format_machine(machine: dict[str, Any]) -> str:
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in machine["matmul_peak_gflops"].items())
    return (
        f"machine: {machine['cpu_model']} ({machine['cpu_vendor']}), "
        f"{machine['usable_cores']} usable of {machine['logical_cores']} logical cores; "
        f"{machine['matmul_peak_dtype']} matmul peak 2048^2, GFLOP/s: {peaks}"
    )


# The MoE reference: the same attention, every MLP 8 experts of 384 with 2 active per token.
REFERENCE_MOE_CONFIG: dict[str, Any] = dict(
    REFERENCE_CONFIG, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=384
)


def make_reference_hf_model(out_dir: Path | None = None, seed: int = 0, moe: bool = False) -> Path:
    """Save a random HF Qwen3 (Qwen3-MoE when `moe`) with the reference config, in a torch
    subprocess, and return its dir."""
    out = Path(out_dir or tempfile.mkdtemp(prefix="jaxrepair-bench-"))
    code = """
import json, sys, torch
import transformers
torch.manual_seed(int(sys.argv[2]))
kind = "Qwen3Moe" if sys.argv[4] == "moe" else "Qwen3"
cfg = getattr(transformers, kind + "Config")(**json.loads(sys.argv[3]))
getattr(transformers, kind + "ForCausalLM")(cfg).save_pretrained(sys.argv[1])
print(json.dumps({"ok": True}))
"""
    config = REFERENCE_MOE_CONFIG if moe else REFERENCE_CONFIG
    kind = "moe" if moe else "dense"
    run_json(code, str(out), str(seed), json.dumps(config), kind, framework="torch")
    return out


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def run_rounds(runners: dict[str, Callable[[], dict]], rounds: int) -> list[dict[str, dict]]:
    """Every framework's run, `rounds` times interleaved (a, b, c, a, b, c): a machine whose
    speed drifts slows every framework alike. One dict of results per round."""
    out: list[dict[str, dict]] = []
    for r in range(rounds):
        results = {}
        for name, run in runners.items():
            results[name] = run()
            version = f" {results[name]['version']}" if "version" in results[name] else ""
            print(f"round {r + 1}/{rounds}: {name}{version} done", flush=True)
        out.append(results)
    return out


def save_results(out_dir: Path, name: str, results: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    return path


def bar_chart(path: Path, title: str, groups: dict[str, dict[str, float]], ylabel: str) -> None:
    """Grouped bar chart: groups = {group: {series: value}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = sorted({s for g in groups.values() for s in g})
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, s in enumerate(series):
        xs = [j + i * width for j in range(len(groups))]
        ax.bar(xs, [groups[g].get(s, 0.0) for g in groups], width, label=s)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels(list(groups))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def agreement(ref, other) -> dict[str, Any]:
    """Exact-match share of two token arrays [rows, tokens] and, per row, the index of the
    first differing token (None = same)."""
    import numpy as np

    a, b = np.asarray(ref), np.asarray(other)
    first = []
    for ra, rb in zip(a, b, strict=True):
        diff = np.nonzero(ra != rb)[0]
        first.append(int(diff[0]) if diff.size else None)
    return {
        "rows_identical": sum(f is None for f in first),
        "rows": len(first),
        "token_match": float((a == b).mean()),
        "first_mismatch_per_row": first,
    }

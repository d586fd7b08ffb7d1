"""jaxrepair Qwen3 vs transformers (PyTorch) on the same weights: forward and fwd+bwd tokens/s.

Each framework runs in its own subprocess; medians of several timed runs after warm-up; the
ratio jaxrepair/PyTorch comes from the same run, and model FLOP/s is reported as a fraction of
the machine's measured matmul peak (MFU).

    python benchmarks/model_vs_torch.py [--model HF_DIR] [--batch 4] [--seq 512] [--repeats 5]
    python benchmarks/model_vs_torch.py --moe     # the Qwen3-MoE reference (8 experts, top 2)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import bar_chart, make_reference_hf_model, run_json, save_results  # noqa: E402

JAX_CODE = r"""
import json, sys, time, statistics
import jax, jax.numpy as jnp, numpy as np
from jaxrepair.model import load_hf, forward
model_dir, batch, seq, repeats, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]

def peak():
    n = 2048
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    ts = []
    for _ in range(5):
        t0 = time.perf_counter(); f(a).block_until_ready(); ts.append(time.perf_counter() - t0)
    return 2 * n**3 / min(ts)

cfg, params = load_hf(model_dir, dtype=dt)
cfg = cfg.replace(remat="none")
tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, size=(batch, seq)), jnp.int32)

fwd = jax.jit(lambda p, t: forward(p, cfg, t))

def loss_fn(p, t):
    logits = forward(p, cfg, t[:, :-1])
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, t[:, 1:, None], axis=-1).mean()

grad = jax.jit(jax.value_and_grad(loss_fn))

def timed(fn, *a):
    t0 = time.perf_counter(); out = fn(*a); jax.block_until_ready(out); return time.perf_counter() - t0

res = {}
for name, fn in (("forward", fwd), ("fwd_bwd", grad)):
    compile_s = timed(fn, params, tokens)
    ts = [timed(fn, params, tokens) for _ in range(repeats)]
    res[name] = {"compile_s": compile_s, "median_s": statistics.median(ts), "times": ts}
res["peak_flops"] = peak()
res["num_params"] = cfg.num_params()
res["flops_per_token"] = cfg.flops_per_token(seq)
res["backend"] = jax.default_backend()
res["devices"] = str(jax.devices()[0].device_kind)
print(json.dumps(res))
"""

TORCH_CODE = r"""
import json, sys, time, statistics
import numpy as np, torch
from transformers import AutoModelForCausalLM
model_dir, batch, seq, repeats, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dev = "cuda" if torch.cuda.is_available() else "cpu"
dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]

def peak():
    n = 2048
    a = torch.randn(n, n, device=dev)
    a @ a
    ts = []
    for _ in range(5):
        if dev == "cuda": torch.cuda.synchronize()
        t0 = time.perf_counter(); a @ a
        if dev == "cuda": torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / min(ts)

model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dt, attn_implementation="sdpa").to(dev)
tokens = torch.as_tensor(np.random.default_rng(0).integers(0, model.config.vocab_size, size=(batch, seq)), device=dev)

def sync():
    if dev == "cuda": torch.cuda.synchronize()

def run_fwd():
    with torch.no_grad():
        model(input_ids=tokens).logits
    sync()

def run_bwd():
    model.zero_grad(set_to_none=True)
    out = model(input_ids=tokens[:, :-1])
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    loss = -logp.gather(-1, tokens[:, 1:, None]).mean()
    loss.backward()
    sync()

def timed(fn):
    t0 = time.perf_counter(); fn(); return time.perf_counter() - t0

res = {}
model.eval()
for name, fn in (("forward", run_fwd), ("fwd_bwd", run_bwd)):
    warm = timed(fn)
    ts = [timed(fn) for _ in range(repeats)]
    res[name] = {"compile_s": warm, "median_s": statistics.median(ts), "times": ts}
res["peak_flops"] = peak()
res["threads"] = torch.get_num_threads()
print(json.dumps(res))
"""


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--model", help="a Hugging Face Qwen3 directory (default: random reference config)"
    )
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--moe", action="store_true", help="random Qwen3-MoE reference config")
    args = ap.parse_args()

    model_dir = Path(args.model) if args.model else make_reference_hf_model(moe=args.moe)
    bench_name = "model_vs_torch_moe" if args.moe else "model_vs_torch"
    common = (str(model_dir), str(args.batch), str(args.seq), str(args.repeats), args.dtype)
    print(f"model: {model_dir}  batch {args.batch} x {args.seq} tokens, {args.dtype}", flush=True)
    jx = run_json(JAX_CODE, *common, framework="jax")
    print("jaxrepair done", flush=True)
    pt = run_json(TORCH_CODE, *common, framework="torch")
    print("pytorch done", flush=True)

    tokens = args.batch * args.seq
    peak = max(jx["peak_flops"], pt["peak_flops"])
    fwd_flops = jx["flops_per_token"] * tokens
    rows = {}
    for phase, mult in (("forward", 1), ("fwd_bwd", 3)):
        row = {}
        for name, res in (("jaxrepair", jx), ("pytorch", pt)):
            t = res[phase]["median_s"]
            row[name] = {
                "tokens_per_s": tokens / t,
                "median_s": t,
                "first_call_s": res[phase]["compile_s"],
                "mfu": mult * fwd_flops / t / peak,
            }
        row["ratio_jax_over_torch"] = (
            row["jaxrepair"]["tokens_per_s"] / row["pytorch"]["tokens_per_s"]
        )
        rows[phase] = row

    print(
        f"\nparams {jx['num_params'] / 1e6:.1f}M  matmul peak {peak / 1e9:.1f} GFLOP/s "
        f"(jax {jx['peak_flops'] / 1e9:.1f}, torch {pt['peak_flops'] / 1e9:.1f}; torch threads {pt['threads']})"
    )
    print(
        f"{'phase':<9} {'jaxrepair tok/s':>16} {'pytorch tok/s':>14} {'ratio':>7} {'MFU jax':>8} {'MFU torch':>10} {'jax compile s':>14}"
    )
    for phase, row in rows.items():
        print(
            f"{phase:<9} {row['jaxrepair']['tokens_per_s']:>16.1f} {row['pytorch']['tokens_per_s']:>14.1f} "
            f"{row['ratio_jax_over_torch']:>7.2f} {row['jaxrepair']['mfu']:>8.1%} {row['pytorch']['mfu']:>10.1%} "
            f"{row['jaxrepair']['first_call_s']:>14.1f}"
        )
    out = Path(args.out)
    results = {
        "model": str(model_dir),
        "batch": args.batch,
        "seq": args.seq,
        "dtype": args.dtype,
        "peak_flops": peak,
        "num_params": jx["num_params"],
        "backend": jx["backend"],
        "device": jx["devices"],
        "phases": rows,
        "raw": {"jax": jx, "torch": pt},
    }
    path = save_results(out, bench_name, results)
    bar_chart(
        out / f"{bench_name}.png",
        f"Qwen3{'-MoE' if args.moe else ''} {jx['num_params'] / 1e6:.0f}M, batch {args.batch}x{args.seq} ({jx['backend']})",
        {
            p: {
                "jaxrepair": r["jaxrepair"]["tokens_per_s"],
                "pytorch": r["pytorch"]["tokens_per_s"],
            }
            for p, r in rows.items()
        },
        "tokens/s",
    )
    print(f"\nwrote {path} and {out / (bench_name + '.png')}")
    print(json.dumps({p: round(r["ratio_jax_over_torch"], 3) for p, r in rows.items()}))


if __name__ == "__main__":
    main()

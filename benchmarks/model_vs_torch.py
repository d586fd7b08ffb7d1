"""jaxrepair Qwen3 vs transformers (PyTorch) on the same weights: forward and fwd+bwd tokens/s.

Each framework runs in its own subprocess; medians of several timed runs after warm-up; the
ratio jaxrepair/PyTorch comes from the same run, and model FLOP/s is reported as a fraction of
the best measured matmul peak (MFU). Every result records the machine: CPU model, vendor,
cores, and each framework's own fp32 matmul peak.

fwd+bwd is one training step's gradient of the next-token loss over B x T tokens, each
framework with the loss its own trainer uses: jaxrepair's SFT loss (`chunked_cross_entropy`),
transformers' `labels=` loss, Tunix's PeftTrainer default.

`--peers tunix` adds Google's Tunix (its own Qwen3 in flax nnx, the same safetensors, its own
venv made on first use: benchmarks/_peers.py); ratios are jaxrepair over each framework, from
the same run.

    python benchmarks/model_vs_torch.py [--model HF_DIR] [--batch 4] [--seq 512] [--repeats 5]
    python benchmarks/model_vs_torch.py --moe     # the Qwen3-MoE reference (8 experts, top 2)
    python benchmarks/model_vs_torch.py --peers tunix [--moe-impl ragged]
    python benchmarks/model_vs_torch.py --peers tunix --rounds 3   # interleaved, see below

`--rounds N` runs every framework N times, interleaved (jaxrepair, pytorch, peers, then
again), so a machine whose speed drifts during the run slows every framework alike: the table
shows each framework's median over the rounds, and each ratio is the median of the N
per-round ratios (their range is printed beside it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    JAX_PEAK_CODE,
    TORCH_PEAK_CODE,
    bar_chart,
    format_machine,
    machine_record,
    make_reference_hf_model,
    median,
    run_json,
    run_rounds,
    save_results,
)
from benchmarks._peers import TUNIX_LOAD_CODE, peers_arg, run_peer  # noqa: E402

PEERS = ("tunix",)

JAX_CODE = (
    JAX_PEAK_CODE
    + r"""
import json, sys, time, statistics
import jax, jax.numpy as jnp, numpy as np
from jaxrepair.model import load_hf, forward
from jaxrepair.model.moe import resolve_impl
from jaxrepair.train.losses import chunked_cross_entropy
model_dir, batch, seq, repeats, dtype, moe_impl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]

cfg, params = load_hf(model_dir, dtype=dt)
cfg = cfg.replace(remat="none", moe_impl=moe_impl)
tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, size=(batch, seq)), jnp.int32)

fwd = jax.jit(lambda p, t: forward(p, cfg, t))

def loss_fn(p, t):  # the SFT trainer's loss: next-token cross-entropy over B x (T - 1) targets
    mask = jnp.ones(t.shape, jnp.float32).at[:, -1].set(0.0)
    return chunked_cross_entropy(p, cfg, t, None, None, jnp.roll(t, -1, axis=1), mask)[0]

grad = jax.jit(jax.value_and_grad(loss_fn))

last = {}  # each function's output from its last timed call

def timed(fn, *a):
    t0 = time.perf_counter(); last[fn] = jax.block_until_ready(fn(*a)); return time.perf_counter() - t0

res = {}
for name, fn in (("forward", fwd), ("fwd_bwd", grad)):
    compile_s = timed(fn, params, tokens)
    ts = [timed(fn, params, tokens) for _ in range(repeats)]
    res[name] = {"compile_s": compile_s, "median_s": statistics.median(ts), "times": ts}
res["loss"] = float(last[grad][0])
res["peak_flops"] = matmul_peak(dtype=dtype)
res["num_params"] = cfg.num_params()
res["flops_per_token"] = cfg.flops_per_token(seq)
res["backend"] = jax.default_backend()
res["devices"] = str(jax.devices()[0].device_kind)
res["moe_impl"] = resolve_impl(cfg.moe_impl) if cfg.is_moe else None
print(json.dumps(res))
"""
)

TORCH_CODE = (
    TORCH_PEAK_CODE
    + r"""
import json, sys, time, statistics
import numpy as np, torch
from transformers import AutoModelForCausalLM
model_dir, batch, seq, repeats, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dev = "cuda" if torch.cuda.is_available() else "cpu"
dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]

model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dt, attn_implementation="sdpa").to(dev)
tokens = torch.as_tensor(np.random.default_rng(0).integers(0, model.config.vocab_size, size=(batch, seq)), device=dev)

def sync():
    if dev == "cuda": torch.cuda.synchronize()

def run_fwd():
    with torch.no_grad():
        model(input_ids=tokens).logits
    sync()

def run_bwd():  # transformers' own causal-LM loss (shifted inside, as its Trainer runs it)
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=tokens, labels=tokens).loss
    loss.backward()
    sync()
    return float(loss)

last = {}  # each function's return from its last timed call

def timed(fn):
    t0 = time.perf_counter(); last[fn] = fn(); return time.perf_counter() - t0

res = {}
model.eval()
for name, fn in (("forward", run_fwd), ("fwd_bwd", run_bwd)):
    warm = timed(fn)
    ts = [timed(fn) for _ in range(repeats)]
    res[name] = {"compile_s": warm, "median_s": statistics.median(ts), "times": ts}
res["loss"] = last[run_bwd]
res["peak_flops"] = matmul_peak(dtype=dtype)
res["threads"] = torch.get_num_threads()
print(json.dumps(res))
"""
)

# Tunix: its Qwen3 nnx module on the same safetensors, jitted as a pure function of its
# state (nnx.split), with its trainer's own next-token loss; a bool causal mask [B, L, L].
TUNIX_CODE = (
    JAX_PEAK_CODE
    + TUNIX_LOAD_CODE
    + r"""
import importlib.metadata, json, sys, time, statistics
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from tunix.sft.peft_trainer import _default_loss_fn
model_dir, batch, seq, repeats, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
model, cfg, caveats = load_tunix(model_dir, dtype)
graphdef, state = nnx.split(model)
tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, size=(batch, seq)), jnp.int32)

def causal_inputs(t):
    b, n = t.shape
    positions = jnp.broadcast_to(jnp.arange(n), (b, n))
    return positions, jnp.broadcast_to(jnp.tril(jnp.ones((n, n), bool)), (b, n, n))

def logits_of(state, t):
    positions, mask = causal_inputs(t)
    return nnx.merge(graphdef, state)(t, positions, None, mask)[0]

def loss_fn(state, t):  # Tunix's own SFT loss (PeftTrainer's default)
    positions, mask = causal_inputs(t)
    return _default_loss_fn(nnx.merge(graphdef, state), t, jnp.ones(t.shape, bool), positions, mask)

fwd = jax.jit(logits_of)
grad = jax.jit(jax.value_and_grad(loss_fn))

last = {}  # each function's output from its last timed call

def timed(fn, *a):
    t0 = time.perf_counter(); last[fn] = jax.block_until_ready(fn(*a)); return time.perf_counter() - t0

res = {}
for name, fn in (("forward", fwd), ("fwd_bwd", grad)):
    compile_s = timed(fn, state, tokens)
    ts = [timed(fn, state, tokens) for _ in range(repeats)]
    res[name] = {"compile_s": compile_s, "median_s": statistics.median(ts), "times": ts}
res["loss"] = float(last[grad][0])
res["peak_flops"] = matmul_peak(dtype=dtype)
res["version"] = importlib.metadata.version("google-tunix")
res["caveats"] = caveats
res["jax_version"] = jax.__version__
print(json.dumps(res))
"""
)


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
    ap.add_argument(
        "--rounds", type=int, default=1, help="interleaved runs of every framework (median)"
    )
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--moe", action="store_true", help="random Qwen3-MoE reference config")
    ap.add_argument(
        "--moe-impl",
        default="auto",
        choices=["auto", "ragged", "tiled"],
        help="jaxrepair's MoE grouped GEMMs (Qwen3Config.moe_impl)",
    )
    ap.add_argument(
        "--peers",
        type=peers_arg(PEERS),
        default=(),
        help=f"comma-separated peer frameworks to add, from {','.join(PEERS)}",
    )
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")

    model_dir = Path(args.model) if args.model else make_reference_hf_model(moe=args.moe)
    bench_name = "model_vs_torch_moe" if args.moe else "model_vs_torch"
    common = (str(model_dir), str(args.batch), str(args.seq), str(args.repeats), args.dtype)
    print(f"model: {model_dir}  batch {args.batch} x {args.seq} tokens, {args.dtype}", flush=True)
    runners = {
        "jaxrepair": lambda: run_json(JAX_CODE, *common, args.moe_impl, framework="jax"),
        "pytorch": lambda: run_json(TORCH_CODE, *common, framework="torch"),
    }
    if "tunix" in args.peers:
        runners["tunix"] = lambda: run_peer("tunix", TUNIX_CODE, *common)
    rounds = run_rounds(runners, args.rounds)
    names = list(runners)
    jx = rounds[-1]["jaxrepair"]
    torch_threads = rounds[-1]["pytorch"]["threads"]

    tokens = args.batch * args.seq
    peaks = {name: median([rd[name]["peak_flops"] for rd in rounds]) for name in names}
    peak = max(peaks.values())
    machine = machine_record(peaks, args.dtype)
    fwd_flops = jx["flops_per_token"] * tokens
    rows = {}
    for phase, mult in (("forward", 1), ("fwd_bwd", 3)):
        row = {}
        for name in names:
            per_round = [rd[name][phase]["median_s"] for rd in rounds]
            t = median(per_round)
            row[name] = {
                "tokens_per_s": tokens / t,
                "median_s": t,
                "round_medians_s": per_round,
                "first_call_s": median([rd[name][phase]["compile_s"] for rd in rounds]),
                "mfu": mult * fwd_flops / t / peak,
            }
        ratios = {
            name: [
                rd[name][phase]["median_s"] / rd["jaxrepair"][phase]["median_s"] for rd in rounds
            ]
            for name in names
            if name != "jaxrepair"
        }
        row["ratio_jax_over_torch"] = median(ratios["pytorch"])
        row["ratio_jaxrepair_over"] = {name: median(rs) for name, rs in ratios.items()}
        row["ratio_range"] = {name: [min(rs), max(rs)] for name, rs in ratios.items()}
        rows[phase] = row

    print(f"\n{format_machine(machine)}")
    print(
        f"params {jx['num_params'] / 1e6:.1f}M"
        + (f", jaxrepair moe_impl {jx['moe_impl']}" if jx["moe_impl"] else "")
        + f", MFU against {peak / 1e9:.1f} GFLOP/s; torch threads {torch_threads}"
        + (f"; median of {args.rounds} interleaved rounds" if args.rounds > 1 else "")
    )
    losses = {name: rounds[-1][name]["loss"] for name in names}
    print("fwd+bwd loss (the same batch): " + ", ".join(f"{n} {v:.5f}" for n, v in losses.items()))
    caveats = {name: r["caveats"] for name, r in rounds[-1].items() if r.get("caveats")}
    for name, notes in caveats.items():
        print(f"caveat ({name}): " + "; ".join(notes))
    print(
        f"{'phase':<9} {'framework':<10} {'tok/s':>9} {'median s':>9} {'MFU':>6} "
        f"{'first call s':>13} {'jaxrepair/this':>15}"
    )
    for phase, row in rows.items():
        for name in names:
            r = row[name]
            ratio, spread = 1.0, ""
            if name != "jaxrepair":
                ratio = row["ratio_jaxrepair_over"][name]
                lo, hi = row["ratio_range"][name]
                spread = f"  ({lo:.2f}-{hi:.2f})" if args.rounds > 1 else ""
            print(
                f"{phase:<9} {name:<10} {r['tokens_per_s']:>9.1f} {r['median_s']:>9.3f} "
                f"{r['mfu']:>6.1%} {r['first_call_s']:>13.1f} {ratio:>15.2f}{spread}"
            )
    out = Path(args.out)
    results = {
        "model": str(model_dir),
        "batch": args.batch,
        "seq": args.seq,
        "dtype": args.dtype,
        "moe_impl": jx["moe_impl"],
        "peak_flops": peak,
        "machine": machine,
        "caveats": caveats,
        "losses": losses,
        "num_params": jx["num_params"],
        "backend": jx["backend"],
        "device": jx["devices"],
        "rounds": args.rounds,
        "phases": rows,
        "raw": rounds,
    }
    path = save_results(out, bench_name, results)
    bar_chart(
        out / f"{bench_name}.png",
        f"Qwen3{'-MoE' if args.moe else ''} {jx['num_params'] / 1e6:.0f}M, batch "
        f"{args.batch}x{args.seq} ({jx['backend']}; {machine['cpu_model']})",
        {p: {name: r[name]["tokens_per_s"] for name in names} for p, r in rows.items()},
        "tokens/s",
    )
    print(f"\nwrote {path} and {out / (bench_name + '.png')}")
    print(
        json.dumps(
            {
                p: {k: round(v, 3) for k, v in r["ratio_jaxrepair_over"].items()}
                for p, r in rows.items()
            }
        )
    )


if __name__ == "__main__":
    main()

"""One short, prepared accelerator check: SFT fwd+bwd MFU and static-batch decode, jaxrepair vs
PyTorch/transformers on the same GPU, each framework in its own process.

Model: a Qwen3 preset's shape (default `qwen3-8b`, all 36 layers) with random weights in bf16
(each framework draws its own: speed does not depend on the values). The learner step is the
SFT loss the trainer uses (chunked cross-entropy, packed-row inputs) under `jax.grad`, with
cuDNN flash attention on NVIDIA GPUs ("auto" elsewhere); PyTorch runs `Qwen3ForCausalLM` with
SDPA attention and its own loss. Decode: greedy, `--gen-rows` prompts of `--gen-prompt` tokens,
`--gen-new` new tokens each, jaxrepair's static `generate` vs transformers' `generate`.

MFU = model FLOPs (`Qwen3Config.flops_per_token`, causal attention included; x3 for fwd+bwd)
per second over the device's dense bf16 peak: the vendor's figure for known devices, else
the matmul peak each framework measures (both are printed and saved). The whole run is sized
to take a few minutes on one H100/H200-class GPU (compiles and model init included).

    python benchmarks/gpu_check.py [--preset qwen3-8b] [--layers N] [--batch 1] [--seq 4096]
        [--gen-rows 32] [--gen-prompt 128] [--gen-new 128] [--out runs/bench]
    python benchmarks/gpu_check.py --preset toy --dtype float32 --seq 256 --gen-rows 4 \
        --gen-prompt 16 --gen-new 8          # a CPU dry run of the same code paths
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import JAX_PEAK_CODE, run_json, save_results  # noqa: E402

# Dense bf16 peak FLOP/s by device name (vendor data sheets, SXM parts, no sparsity).
NOMINAL_BF16_PEAK = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L4": 121e12}

PRESET_HF = r"""
import json, sys
from jaxrepair.model.config import Qwen3Config
cfg = Qwen3Config.preset(sys.argv[1])
if int(sys.argv[2]):
    cfg = cfg.replace(num_hidden_layers=int(sys.argv[2]))
print(json.dumps({"hf": cfg.to_hf_dict(sys.argv[3]), "flops_per_token": cfg.flops_per_token(int(sys.argv[4])), "num_params": cfg.num_params()}))
"""

JAX_CODE = (
    JAX_PEAK_CODE
    + r"""
import json, sys, time, statistics
import jax, jax.numpy as jnp, numpy as np
from jaxrepair.model import Qwen3Config, init_params
from jaxrepair.model.sampler import generate
from jaxrepair.train.sft import sft_loss_fn
(preset, layers, batch, seq, repeats, dtype, remat, rows, plen, new) = sys.argv[1:11]
layers, batch, seq, repeats, rows, plen, new = map(int, (layers, batch, seq, repeats, rows, plen, new))
dt = jnp.dtype(dtype)
gpu = jax.default_backend() == "gpu"
cfg = Qwen3Config.preset(preset, remat=remat, attention_impl="cudnn" if gpu else "auto")
if layers:
    cfg = cfg.replace(num_hidden_layers=layers)

def timed(fn, *a):
    t0 = time.perf_counter(); jax.block_until_ready(fn(*a)); return time.perf_counter() - t0

res = {"device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
       "attention_impl": cfg.attention_impl, "jax": jax.__version__}
t0 = time.perf_counter()
params = init_params(cfg, jax.random.key(0), dtype=dt)
jax.block_until_ready(params)
res["init_s"] = time.perf_counter() - t0
rng = np.random.default_rng(0)
tokens = rng.integers(0, cfg.vocab_size, size=(batch, seq + 1))
b = {
    "tokens": jnp.asarray(tokens[:, :-1], jnp.int32),
    "targets": jnp.asarray(tokens[:, 1:], jnp.int32),
    "positions": jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (batch, seq)),
    "segment_ids": jnp.ones((batch, seq), jnp.int32),
    "loss_mask": jnp.ones((batch, seq), jnp.float32),
}
loss_fn = sft_loss_fn(cfg)
step = jax.jit(jax.value_and_grad(lambda p, b: loss_fn(p, b, None)[0]))
first = timed(step, params, b)
ts = [timed(step, params, b) for _ in range(repeats)]
res["fwd_bwd"] = {"first_call_s": first, "median_s": statistics.median(ts), "times": ts}
del step
prompts = [list(map(int, rng.integers(0, cfg.vocab_size, plen))) for _ in range(rows)]
run = lambda: generate(params, cfg, prompts, max_new_tokens=new, temperature=0.0)
first = timed(lambda: run().tokens)
ts = [timed(lambda: run().tokens) for _ in range(max(1, repeats // 2))]
res["decode"] = {"first_call_s": first, "median_s": statistics.median(ts), "times": ts}
res["matmul_peak"] = matmul_peak(8192 if gpu else 1024, dtype)
print(json.dumps(res))
"""
)

TORCH_CODE = r"""
import json, sys, time, statistics
import numpy as np, torch, transformers
hf, batch, seq, repeats, dtype, rows, plen, new = json.loads(sys.argv[1]), *sys.argv[2:9]
batch, seq, repeats, rows, plen, new = map(int, (batch, seq, repeats, rows, plen, new))
dev = "cuda" if torch.cuda.is_available() else "cpu"
dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]

def sync():
    if dev == "cuda": torch.cuda.synchronize()

def peak():
    n = 8192 if dev == "cuda" else 1024
    a = torch.ones(n, n, device=dev, dtype=dt)
    a @ a; sync(); ts = []
    for _ in range(5):
        t0 = time.perf_counter(); a @ a; sync(); ts.append(time.perf_counter() - t0)
    return 2 * n**3 / min(ts)

def timed(fn):
    t0 = time.perf_counter(); fn(); sync(); return time.perf_counter() - t0

res = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__,
       "transformers": transformers.__version__}
t0 = time.perf_counter()
cfg = transformers.Qwen3Config(**{k: v for k, v in hf.items() if k not in ("architectures", "model_type")})
torch.manual_seed(0)
with torch.device(dev):
    model = transformers.Qwen3ForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=dt)
model.train(); sync()
res["init_s"] = time.perf_counter() - t0
rng = np.random.default_rng(0)
tokens = torch.as_tensor(rng.integers(0, cfg.vocab_size, size=(batch, seq + 1)), device=dev)

def fwd_bwd():
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=tokens[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()

first = timed(fwd_bwd)
ts = [timed(fwd_bwd) for _ in range(repeats)]
res["fwd_bwd"] = {"first_call_s": first, "median_s": statistics.median(ts), "times": ts}
model.zero_grad(set_to_none=True); model.eval()
prompts = torch.as_tensor(rng.integers(0, cfg.vocab_size, size=(rows, plen)), device=dev)

def decode():
    with torch.no_grad():
        model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new,
                       min_new_tokens=new, do_sample=False, pad_token_id=0)

first = timed(decode)
ts = [timed(decode) for _ in range(max(1, repeats // 2))]
res["decode"] = {"first_call_s": first, "median_s": statistics.median(ts), "times": ts}
res["matmul_peak"] = peak()
print(json.dumps(res))
"""


def nominal_peak(device: str) -> float | None:
    return next((v for k, v in NOMINAL_BF16_PEAK.items() if k in device), None)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="qwen3-8b")
    ap.add_argument("--layers", type=int, default=0, help="0: the preset's own depth")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--remat", default="none", choices=["none", "full", "save_dots"])
    ap.add_argument("--gen-rows", type=int, default=32)
    ap.add_argument("--gen-prompt", type=int, default=128)
    ap.add_argument("--gen-new", type=int, default=128)
    ap.add_argument("--frameworks", default="jax,torch")
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()

    info = run_json(
        PRESET_HF, args.preset, str(args.layers), args.dtype, str(args.seq), framework="jax"
    )
    gen = (str(args.gen_rows), str(args.gen_prompt), str(args.gen_new))
    results: dict[str, dict] = {}
    for fw in args.frameworks.split(","):
        print(f"{fw} ...", flush=True)
        if fw == "jax":
            results[fw] = run_json(
                JAX_CODE, args.preset, str(args.layers), str(args.batch), str(args.seq),
                str(args.repeats), args.dtype, args.remat, *gen, framework="jax",
            )  # fmt: skip
        elif fw == "torch":
            results[fw] = run_json(
                TORCH_CODE, json.dumps(info["hf"]), str(args.batch), str(args.seq),
                str(args.repeats), args.dtype, *gen, framework="torch",
            )  # fmt: skip
        else:
            raise SystemExit(f"unknown framework {fw!r}; choose from jax, torch")

    tokens = args.batch * args.seq
    flops = 3 * info["flops_per_token"] * tokens
    new_tokens = args.gen_rows * args.gen_new
    print(
        f"\n{args.preset} ({info['num_params'] / 1e9:.2f}B params), {args.dtype}, "
        f"fwd+bwd {args.batch}x{args.seq}, decode {args.gen_rows}x({args.gen_prompt}+{args.gen_new})"
    )
    print(
        f"{'framework':<9} {'device':<28} {'fwd+bwd s':>9} {'tok/s':>9} {'MFU':>6} "
        f"{'MFU/measured':>12} {'decode tok/s':>12}"
    )
    rows = {}
    for fw, r in results.items():
        t = r["fwd_bwd"]["median_s"]
        peak = nominal_peak(r["device"]) or r["matmul_peak"]
        rows[fw] = {
            "fwd_bwd_tokens_per_s": tokens / t,
            "mfu": flops / t / peak,
            "mfu_vs_measured_peak": flops / t / r["matmul_peak"],
            "peak_used": peak,
            "decode_tokens_per_s": new_tokens / r["decode"]["median_s"],
        }
        x = rows[fw]
        print(
            f"{fw:<9} {r['device'][:28]:<28} {t:>9.3f} {x['fwd_bwd_tokens_per_s']:>9.0f} "
            f"{x['mfu']:>6.1%} {x['mfu_vs_measured_peak']:>12.1%} {x['decode_tokens_per_s']:>12.0f}"
        )
    if {"jax", "torch"} <= set(rows):
        j, p = rows["jax"], rows["torch"]
        ratios = {
            "fwd_bwd": j["fwd_bwd_tokens_per_s"] / p["fwd_bwd_tokens_per_s"],
            "decode": j["decode_tokens_per_s"] / p["decode_tokens_per_s"],
        }
        print(f"jaxrepair / PyTorch: {json.dumps({k: round(v, 3) for k, v in ratios.items()})}")
        rows["ratios"] = ratios
    path = save_results(
        Path(args.out),
        f"gpu_check_{args.preset}",
        {"args": vars(args), "model": info, "summary": rows, "raw": results},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

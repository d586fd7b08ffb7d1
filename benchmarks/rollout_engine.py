"""Rollout engines on a multi-turn agent workload: today's batched `generate`, our `JaxEngine`
and vLLM (`VllmEngine`), on the same random weights and the same requests.

Mixed workload (`_episodes.py`): 64 episodes of 3-6 turns; completion lengths from a long-tailed
(lognormal) distribution with a fixed seed; tool-output tokens appended between turns; each
turn's prompt is the whole transcript so far. Sampled at temperature 1 with no stop tokens, so
every engine generates exactly the drawn number of tokens.

* generate: every round, `jaxrepair.model.sampler.generate` over the live episodes, as many
  rows per call as the prefill's attention scores allow in `--static-mem-gib` (its "xla"
  attention materialises them), each call decoding until its longest completion is done
  (today's trainer);
* jax / vllm: every episode's first turn submitted at once, its next turn as soon as the
  previous one completes (`RolloutEngine.add` / `step`).

Each engine runs in its own subprocess (vLLM in the Python given by `--vllm-python`, its own
environment); each runs the workload once with other tokens but the same shapes (warm-up: every
compile happens there, and nothing it cached is a prefix of the timed pass), then once timed.
Reported: generated tokens/s over the timed pass, prompt tokens prefilled vs reused from the
cache, decode-batch fill (requests advanced per engine step / slots), the engine's own slot
occupancy where it reports one, and the ratio to `generate` from the same run. Also the fixed
greedy workload: 8 prompts x (64 prompt + 128 new) tokens, median of `--repeats` runs.

    python benchmarks/rollout_engine.py [--model toy|58m] [--engines generate,jax,vllm]
        [--vllm-python PATH] [--quick] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    REFERENCE_CONFIG,
    ROOT,
    agreement,
    bar_chart,
    bench_env,
    run_json,
    save_results,
)
from benchmarks._episodes import QUICK_SPEC, WorkloadSpec, make_workload, summary  # noqa: E402
from benchmarks._peers import peer_python  # noqa: E402

ENGINES = ("generate", "jax", "vllm")

MODELS = ("toy", "58m")  # the preset `jaxrepair demo` trains, and the 58M reference

# A preset as an HF config, read from `Qwen3Config` in a subprocess: this driver process never
# imports jax, and the benchmark's toy model is the preset itself, not a copy of its numbers.
PRESET_HF = r"""
import json, sys
from jaxrepair.model.config import Qwen3Config
print(json.dumps(Qwen3Config.preset(sys.argv[1]).to_hf_dict("float32")))
"""


def model_config(name: str) -> dict[str, Any]:
    """The HF config of benchmark model `name`."""
    if name == "58m":
        return REFERENCE_CONFIG
    return run_json(PRESET_HF, name, framework="jax")


MAKE_MODEL = r"""
import json, sys, torch
import transformers
torch.manual_seed(int(sys.argv[2]))
cfg = transformers.Qwen3Config(**json.loads(sys.argv[3]))
transformers.Qwen3ForCausalLM(cfg).save_pretrained(sys.argv[1])
print(json.dumps({"ok": True}))
"""

# The driver shared by the three engines: argv = model_dir, job file (JSON), engine name.
ENGINE_CODE = r"""
import dataclasses, json, statistics, sys, time
from benchmarks._episodes import Episode, drive_engine, drive_static
from jaxrepair.engine.api import Request, Sampling
model_dir, job = sys.argv[1], json.loads(open(sys.argv[2]).read())
kind = sys.argv[3]
episodes = {k: [Episode(tuple(e[0]), tuple(e[1]), tuple(map(tuple, e[2]))) for e in v]
            for k, v in job["workloads"].items()}
fixed = job["fixed_prompts"]  # [repeats + 1][8][64]: first set is the warm-up
info = {}
t0 = time.perf_counter()

compiles = {"n": 0, "s": 0.0}  # XLA compiles (count, seconds): none belong in a timed pass
if kind in ("generate", "jax"):
    import jax, jax.numpy as jnp
    from jaxrepair.model import load_hf

    def on_event(event, seconds, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles["n"] += 1
            compiles["s"] += seconds
    jax.monitoring.register_event_duration_secs_listener(on_event)
    cfg, params = load_hf(model_dir, dtype=jnp.float32)
    info.update(backend=jax.default_backend(), device=str(jax.devices()[0].device_kind),
                jax=jax.__version__)
if kind == "generate":
    import numpy as np
    from jaxrepair.model.sampler import DEFAULT_BUCKETS, Buckets, generate

    def gen(prompts, max_new, seeds):
        # As many rows per call as fit the attention scores of the prompt bucket (the "xla"
        # prefill materialises [rows, heads, P, P] in float32) within job["static_mem"] bytes;
        # one rng per call: today's generate takes one.
        p = Buckets.pick(DEFAULT_BUCKETS.prompt, max(len(x) for x in prompts))
        fit = max(1, job["static_mem"] // (cfg.num_attention_heads * p * p * 4))
        rows = 1 << (min(fit, len(prompts)).bit_length() - 1)
        tokens, padded, slot_tokens = [], 0, 0
        for i in range(0, len(prompts), rows):
            part = prompts[i : i + rows]
            out = generate(params, cfg, part, max_new_tokens=max_new,
                           temperature=job["temperature"], rng=seeds[i])
            b = Buckets.pick(DEFAULT_BUCKETS.batch, len(part))
            padded += b * Buckets.pick(DEFAULT_BUCKETS.prompt, max(len(x) for x in part))
            slot_tokens += b * out.steps
            tokens += out.tokens.tolist()
        return tokens, {"padded_prompt_tokens": padded, "slot_tokens": slot_tokens}

    def run_fixed(prompts):
        out = generate(params, cfg, prompts, max_new_tokens=job["fixed_new"], temperature=0.0)
        return out.tokens.tolist()

    def run_mixed(eps, seed):
        return drive_static(gen, eps, seed)
else:
    if kind == "jax":
        from jaxrepair.engine.jax_engine import EngineConfig, JaxEngine
        engine = JaxEngine(params, cfg, EngineConfig(**job["jax_config"]))
    else:
        import vllm
        from jaxrepair.engine.vllm_engine import VllmEngine
        engine = VllmEngine(model_dir, **job["vllm_config"])
        info.update(vllm=vllm.__version__)

    def run_fixed(prompts):
        reqs = [Request(p, Sampling(max_new_tokens=job["fixed_new"], temperature=0.0))
                for p in prompts]
        return [list(c.tokens) for c in engine.generate(reqs)]

    def run_mixed(eps, seed):
        before = dataclasses.replace(engine.stats) if kind == "jax" else None
        res = drive_engine(engine, eps, job["temperature"], seed)
        res["slots"] = job["slots"]
        res["batch_fill"] = res["mean_active_requests_per_step"] / job["slots"]
        if before is not None:
            st = engine.stats
            steps = st.decode_steps - before.decode_steps
            res["decode_slot_occupancy"] = (st.slot_steps - before.slot_steps) / max(steps * job["slots"], 1)
            res["engine_prefilled_tokens"] = st.prefilled_tokens - before.prefilled_tokens
            res["engine_cached_tokens"] = st.cached_tokens - before.cached_tokens
            res["preemptions"] = st.preemptions - before.preemptions
        return res

info["startup_s"] = time.perf_counter() - t0
result = {"engine": kind, **info}
if job["mixed"]:
    t = time.perf_counter()
    warm = run_mixed(episodes["warmup"], 1)
    result["mixed_warmup_s"] = time.perf_counter() - t
    n0, s0 = compiles["n"], compiles["s"]
    result["mixed"] = run_mixed(episodes["timed"], 2)
    if kind != "vllm":  # counted for XLA only
        result["mixed"].update(compiles=compiles["n"] - n0, compile_s=compiles["s"] - s0)
if job["fixed"]:
    t = time.perf_counter()
    run_fixed(fixed[0])
    result["fixed_warmup_s"] = time.perf_counter() - t
    times, tokens, n0 = [], None, compiles["n"]
    for prompts in fixed[1:]:
        t = time.perf_counter()
        out = run_fixed(prompts)
        times.append(time.perf_counter() - t)
        tokens = tokens or out
    result["fixed"] = {"times": times, "median_s": statistics.median(times), "tokens": tokens}
    if kind != "vllm":
        result["fixed"]["compiles"] = compiles["n"] - n0
if kind == "vllm":
    engine.close()
print(json.dumps(result))
"""


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_in(python: str, code: str, *args: str, timeout: float, log: Path) -> dict[str, Any]:
    """`code` in a fresh `python` (another environment), repository on the path; last JSON line.

    The whole stderr, that of the processes it spawns included (vLLM's engine core logs the
    cause of an `EngineDeadError` there, not in the exception), goes to `log`."""
    env = bench_env()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env.setdefault("JAX_PLATFORMS", "cpu")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as err:
        proc = subprocess.run(
            [python, "-c", code, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=timeout,
        )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{python} subprocess failed (full stderr: {log}):\n{tail}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"subprocess printed no JSON:\n{proc.stdout[-2000:]}")
    return json.loads(lines[-1])


def make_model(model_cfg: dict[str, Any], out: Path, seed: int) -> Path:
    run_json(MAKE_MODEL, str(out), str(seed), json.dumps(model_cfg), framework="torch")
    return out


def _engines(text: str) -> list[str]:
    names = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in names if e not in ENGINES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"--engines takes a comma list of {', '.join(ENGINES)}; got {text!r}"
        )
    return names


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="toy", choices=sorted(MODELS))
    ap.add_argument("--engines", type=_engines, default=list(ENGINES))
    ap.add_argument(
        "--vllm-python",
        help="the Python of an environment with vllm (default: the venv benchmarks/_peers.py "
        "makes on first use)",
    )
    ap.add_argument("--quick", action="store_true", help="a small smoke run (8 short episodes)")
    ap.add_argument("--episodes", type=int, help="episodes in the mixed workload (default 64)")
    ap.add_argument("--slots", type=int, default=64, help="decode slots of jax and vllm")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of the fixed workload")
    ap.add_argument("--no-fixed", action="store_true", help="skip the fixed greedy workload")
    ap.add_argument("--no-mixed", action="store_true", help="skip the mixed workload")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument(
        "--static-mem-gib",
        type=float,
        default=4.0,
        help="generate: rows per call are capped so the prefill's attention scores fit this",
    )
    ap.add_argument("--block-size", type=int, default=64, help="our engine's KV block")
    ap.add_argument("--vllm-block-size", type=int, help="vLLM KV block (default: vLLM's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per engine")
    args = ap.parse_args()
    if (
        min(args.slots, args.repeats, args.block_size) < 1
        or (args.episodes is not None and args.episodes < 1)
        or 512 % args.block_size
    ):
        ap.error(
            "--slots, --repeats, --episodes and --block-size must be >= 1 (block: a divisor of 512)"
        )

    spec = QUICK_SPEC if args.quick else WorkloadSpec()
    if args.episodes is not None:
        spec = dataclasses.replace(spec, episodes=args.episodes)
    model_cfg = model_config(args.model)
    vocab, max_pos = model_cfg["vocab_size"], model_cfg["max_position_embeddings"]
    if spec.max_transcript() > max_pos:
        ap.error(f"the workload's transcripts reach {spec.max_transcript()} > {max_pos} tokens")
    repeats = 1 if args.quick else args.repeats
    fixed_new, fixed_len, fixed_rows = (16, 16, 4) if args.quick else (128, 64, 8)

    work = Path(tempfile.mkdtemp(prefix="jaxrepair-rollout-"))
    model_dir = make_model(model_cfg, work / "model", args.seed)
    timed = make_workload(spec, vocab, lengths_seed=args.seed, tokens_seed=args.seed)
    warmup = make_workload(spec, vocab, lengths_seed=args.seed, tokens_seed=args.seed + 1)
    rng = np.random.default_rng(args.seed + 7)
    fixed_prompts = rng.integers(1, vocab, size=(repeats + 1, fixed_rows, fixed_len)).tolist()
    block = args.block_size
    total_tokens = sum(
        len(e.first_prompt) + sum(e.completion_lengths) + sum(map(len, e.tool_outputs))
        for e in timed
    )
    job = {
        "temperature": args.temperature,
        "slots": args.slots,
        "static_mem": int(args.static_mem_gib * 2**30),
        "mixed": not args.no_mixed,
        "fixed": not args.no_fixed,
        "fixed_new": fixed_new,
        "fixed_prompts": fixed_prompts,
        "workloads": {
            name: [[e.first_prompt, e.completion_lengths, e.tool_outputs] for e in eps]
            for name, eps in (("timed", timed), ("warmup", warmup))
        },
        # room for every transcript of the workload at once (the cache keeps them all)
        "jax_config": dict(
            slots=args.slots,
            block_size=block,
            num_blocks=total_tokens // block + spec.episodes * 2 + 64,
            decode_chunk=16,
            prefill_chunk=512,
            max_seq_len=max_pos,
        ),
        "vllm_config": dict(
            dtype="float32",
            max_num_seqs=args.slots,
            max_model_len=max_pos,
            kv_cache_bytes=_kv_bytes(model_cfg, total_tokens + spec.episodes * 256),
            block_size=args.vllm_block_size,
            engine_kwargs={"gpu_memory_utilization": 0.05},
        ),
    }
    job_file = work / "job.json"
    job_file.write_text(json.dumps(job))
    wl = summary(timed)
    print(
        f"model {args.model} ({model_dir}); mixed: {wl['episodes']} episodes, {wl['turns']} "
        f"turns, {wl['generated_tokens']} generated tokens (completion mean "
        f"{wl['completion_len_mean']:.0f}, p90 {wl['completion_len_p90']:.0f}, max "
        f"{wl['completion_len_max']}); fixed: {fixed_rows} x ({fixed_len} + {fixed_new}) greedy",
        flush=True,
    )
    machine = machine_info()
    results: dict[str, dict[str, Any]] = {}
    fixed_name = f"greedy {fixed_rows}x({fixed_len}+{fixed_new})"
    stem = f"rollout_engine_{args.model}" + ("_quick" if args.quick else "")
    out = Path(args.out)

    def write() -> str:
        """Table, JSON and chart of the engines measured so far (rewritten after each)."""
        machine["load_avg_end"] = list(os.getloadavg())
        rows = _rows(results, wl, fixed_rows * fixed_new)
        table = _table(rows, args.model, machine, wl, fixed_name)
        report = {
            "model": args.model,
            "model_config": model_cfg,
            "machine": machine,
            "workload": {
                **dataclasses.asdict(spec),
                **wl,
                "fixed": [fixed_rows, fixed_len, fixed_new],
            },
            "temperature": args.temperature,
            "slots": args.slots,
            "static_mem": job["static_mem"],
            "job": {k: job[k] for k in ("jax_config", "vllm_config")},
            "rows": rows,
            "raw": {
                k: {kk: vv for kk, vv in v.items() if kk != "fixed"} for k, v in results.items()
            },
        }
        ref = results.get("generate", {}).get("fixed", {}).get("tokens")
        if ref is not None:
            report["fixed_greedy_agreement_vs_generate"] = {
                k: agreement(ref, v["fixed"]["tokens"])
                for k, v in results.items()
                if k != "generate" and "fixed" in v
            }
        save_results(out, stem, report)
        (out / f"{stem}.md").write_text(table + "\n")
        groups: dict[str, dict[str, float]] = {}
        for r in rows:
            if r.get("mixed_tok_s"):
                groups.setdefault("mixed multi-turn", {})[r["engine"]] = r["mixed_tok_s"]
            if r.get("fixed_tok_s"):
                groups.setdefault(fixed_name, {})[r["engine"]] = r["fixed_tok_s"]
        if groups:
            bar_chart(
                out / f"{stem}.png",
                f"rollout engines, {args.model} model, {machine['cores']} CPU cores",
                groups,
                "generated tokens/s",
            )
        return table

    for name in args.engines:
        python = sys.executable
        if name == "vllm":
            python = args.vllm_python or str(peer_python("vllm"))
        t = time.perf_counter()
        try:
            results[name] = run_in(
                python,
                ENGINE_CODE,
                str(model_dir),
                str(job_file),
                name,
                timeout=args.timeout,
                log=out / f"{stem}_{name}.stderr.log",
            )
            print(f"{name} done in {time.perf_counter() - t:.0f} s", flush=True)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            results[name] = {"engine": name, "error": str(e)[-2000:]}
            print(f"{name}: FAILED\n{str(e)[-2000:]}", flush=True)
        table = write()
    print("\n" + table)
    print(f"\nwrote {out / stem}.json, .md and .png")


def _kv_bytes(cfg: dict[str, Any], tokens: int) -> int:
    per_token = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"] * 4
    return max(per_token * tokens, 256 << 20)


def _rows(
    results: dict[str, dict[str, Any]], wl: dict[str, Any], fixed_tokens: int
) -> list[dict[str, Any]]:
    rows = []
    for name, res in results.items():
        row: dict[str, Any] = {"engine": name}
        if "error" in res:
            row["error"] = res["error"].splitlines()[-1] if res["error"] else "failed"
            rows.append(row)
            continue
        row["startup_s"] = res.get("startup_s")
        if "mixed" in res:
            m = res["mixed"]
            row.update(
                mixed_tok_s=m["generated_tokens"] / m["wall_s"],
                mixed_wall_s=m["wall_s"],
                mixed_warmup_s=res["mixed_warmup_s"],
                prompt_tokens=m["prompt_tokens"],
                prefilled_tokens=m["prefilled_prompt_tokens"],
                cached_tokens=m["cached_prompt_tokens"],
                padded_prompt_tokens=m.get("padded_prompt_tokens"),
                batch_fill=m.get("batch_fill"),
                decode_slot_occupancy=m.get("decode_slot_occupancy"),
                timed_compiles=m.get("compiles"),
            )
            if m["generated_tokens"] != wl["generated_tokens"]:
                row["error"] = f"generated {m['generated_tokens']} of {wl['generated_tokens']}"
        if "fixed" in res:
            f = res["fixed"]
            row.update(
                fixed_tok_s=fixed_tokens / f["median_s"],
                fixed_best_tok_s=fixed_tokens / min(f["times"]),
                fixed_warmup_s=res["fixed_warmup_s"],
            )
        rows.append(row)
    base = next((r for r in rows if r["engine"] == "generate"), {})
    for r in rows:
        for key in ("mixed_tok_s", "fixed_tok_s"):
            if base.get(key) and r.get(key):
                r[key.replace("_tok_s", "_vs_generate")] = r[key] / base[key]
    return rows


def _fmt(v: Any, spec: str = ".1f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _table(
    rows: list[dict[str, Any]], model: str, machine: dict[str, Any], wl: dict, fixed_name: str
) -> str:
    head = (
        f"Rollout engines, {model} model, {machine['cpu']} ({machine['cores']} cores, load "
        f"{machine['load_avg'][0]:.1f} at start, {machine['load_avg_end'][0]:.1f} at end). "
        f"Mixed: {wl['episodes']} episodes, {wl['turns']} turns, {wl['generated_tokens']} "
        "generated tokens.\n\n"
        "| engine | mixed tok/s | vs generate | prompt tok prefilled / cached | padded prefill "
        f"| batch fill | slot occupancy | {fixed_name} tok/s | vs generate | start s "
        "| warm-up s | compiles in timed pass |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if "error" in r and "mixed_tok_s" not in r:
            lines.append(f"| {r['engine']} | failed: {r['error']} |" + " |" * 10)
            continue
        pre = r.get("prefilled_tokens")
        cached = f"{_fmt(pre)} / {_fmt(r.get('cached_tokens'))}" if pre is not None else "-"
        lines.append(
            f"| {r['engine']} | {_fmt(r.get('mixed_tok_s'))} | {_fmt(r.get('mixed_vs_generate'), '.2f')} "
            f"| {cached} | {_fmt(r.get('padded_prompt_tokens'))} | {_fmt(r.get('batch_fill'), '.2f')} "
            f"| {_fmt(r.get('decode_slot_occupancy'), '.2f')} | {_fmt(r.get('fixed_tok_s'))} "
            f"| {_fmt(r.get('fixed_vs_generate'), '.2f')} | {_fmt(r.get('startup_s'))} "
            f"| {_fmt(r.get('mixed_warmup_s'))} | {_fmt(r.get('timed_compiles'))} |"
        )
    return head + "\n".join(lines)


if __name__ == "__main__":
    main()

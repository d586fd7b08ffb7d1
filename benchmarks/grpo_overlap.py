"""Accelerator idle fraction of GRPO with the rollout/train overlap on and off.

The same short GRPO run (toy Qwen3, random init, tiny tokenizer, simplified pipeline, real
sandboxed farm, validation cache off so every answer is built) twice: `grpo.overlap=off`
(collect batch k, then train on it) and `on` (collect batch k+1 while training on batch k).
The idle fraction is 1 - (union of generation and training time) / wall time, from the run's
own AcceleratorClock; "steady" leaves out the first step (compilation, first builds).

    python benchmarks/grpo_overlap.py                    # JSON + PNG in runs/bench/
    python benchmarks/grpo_overlap.py --steps 8 --workers 4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import bar_chart, save_results  # noqa: E402


def steady_idle(metrics_path: Path) -> float:
    """Time-weighted idle fraction of every step but the first."""
    rows = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "idle_frac" in r][1:]
    wall = sum(r["step_s"] for r in rows)
    return sum(r["idle_frac"] * r["step_s"] for r in rows) / wall if wall else float("nan")


def run(overlap: bool, args: argparse.Namespace, tasks: list, tok) -> dict:
    from jaxrepair.config import load_config
    from jaxrepair.train.grpo_trainer import run_grpo

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            None,
            [
                "model.preset=toy",
                "model.attention_impl=blocked",
                "tokenizer.spec=tiny",
                f"data.seq_len={args.seq_len}",
                f"train.out_dir={tmp}/run",
                f"train.steps={args.steps}",
                f"train.checkpoint_every={args.steps}",
                f"grpo.tasks_per_step={args.tasks_per_step}",
                f"grpo.group_size={args.group}",
                f"grpo.max_new_tokens={args.max_new_tokens}",
                "grpo.temperature=1.0",
                "grpo.submit_unfinished=true",
                f"grpo.overlap={'on' if overlap else 'off'}",
                f"envs.workers={args.workers}",
                "envs.cache_validation=false",
            ],
        )
        s = run_grpo(cfg, tokenizer=tok, tasks=tasks, progress=False)
        return {
            "overlap": overlap,
            "idle_frac_run": s["idle_frac"],
            "idle_frac_steady": steady_idle(Path(tmp) / "run" / "metrics.jsonl"),
            "episodes_per_s": s["episodes_per_s"],
            "wall_s": s["wall_s"],
            "accounting": s["accounting"],
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--tasks-per-step", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    args = ap.parse_args(argv)

    from jaxrepair.demo import _fitting
    from jaxrepair.envs import load_tasks
    from jaxrepair.envs.tokenizer import load_tokenizer

    tok = load_tokenizer("tiny")
    corpus = load_tasks(ROOT / "jaxrepair" / "data" / "tasks" / "corpus")
    train = [t for t in corpus if t.split == "train"]
    tasks = _fitting(sorted(train, key=lambda t: t.id), tok, args.seq_len - args.max_new_tokens)
    results = {"settings": vars(args), "runs": [run(o, args, tasks, tok) for o in (False, True)]}
    for r in results["runs"]:
        print(
            f"overlap {'on ' if r['overlap'] else 'off'}: idle {r['idle_frac_run']:.1%} whole run, "
            f"{r['idle_frac_steady']:.1%} steady state; {r['episodes_per_s']:.2f} episodes/s; "
            f"{r['wall_s']:.0f} s; accounting complete {r['accounting']['complete']}"
        )
    out = Path(args.out)
    path = save_results(out, "grpo_overlap", results)
    bar_chart(
        out / "grpo_overlap.png",
        "GRPO accelerator idle fraction",
        {
            f"overlap {'on' if r['overlap'] else 'off'}": {
                "whole run": r["idle_frac_run"],
                "steady state": r["idle_frac_steady"],
            }
            for r in results["runs"]
        },
        "idle fraction",
    )
    print(f"wrote {path} and {out / 'grpo_overlap.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

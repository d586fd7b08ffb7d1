"""The `jaxrepair` command: demo, sft, grpo, eval, import-hf, export-hf, envs, plan.

Heavy imports (JAX, the trainers) happen inside each command so `jaxrepair --help` and the
environment commands start fast and never initialise an accelerator they do not use.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="run config TOML (defaults are used when omitted)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=1e-5 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxrepair",
        description="JAX training stack for agentic RL on code repair (Qwen3, SFT, GRPO).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the paper's whole method at toy scale on this machine")
    _add_config_args(p)
    p.add_argument("--out", default="runs/demo", help="output directory")
    p.add_argument("--quick", action="store_true", help="reduced setting (as CI runs it)")

    for name, text in (
        ("sft", "supervised fine-tuning on agent trajectories"),
        ("grpo", "GRPO against build-validation rewards"),
        ("eval", "evaluate a checkpoint in the full and simplified pipelines"),
    ):
        _add_config_args(sub.add_parser(name, help=text))

    p = sub.add_parser("import-hf", help="Hugging Face directory -> orbax checkpoint")
    p.add_argument("hf_dir")
    p.add_argument("out")
    p = sub.add_parser("export-hf", help="orbax checkpoint -> Hugging Face directory")
    p.add_argument("ckpt")
    p.add_argument("out")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")

    p = sub.add_parser("envs", help="code-repair environments")
    envs = p.add_subparsers(dest="envs_command", required=True, metavar="ENVS_COMMAND")
    v = envs.add_parser("validate", help="broken fails, fixed passes, repeatedly, for every task")
    v.add_argument("--tasks", default=None, help="task folder or .jsonl (default: bundled corpus)")
    v.add_argument("--backend", default="local", choices=["local", "docker"])
    v.add_argument("--repeats", type=int, default=3)
    v.add_argument("--workers", type=int, default=2)
    v.add_argument("--sample", type=int, default=None, help="validate a stratified sample of N")
    v.add_argument("--json", dest="json_out", default=None, help="write the report here")
    ls = envs.add_parser("list", help="list tasks with category, build system and split")
    ls.add_argument("--tasks", default=None)

    p = sub.add_parser("plan", help="memory plan per device for a model, mesh and batch")
    p.add_argument(
        "--config",
        default=None,
        help="plan a run config at its [mesh] devices/hbm_gib (the other flags are ignored, "
        "except --devices, --hbm-gib and --kind when given)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --config: override a config field, e.g. --set data.seq_len=65536",
    )
    p.add_argument("--kind", default=None, choices=["sft", "grpo"], help="default: sft")
    p.add_argument("--model", default="qwen3-32b", help="preset name or HF directory")
    p.add_argument("--devices", type=int, default=None, help="device count (default 8)")
    p.add_argument("--mesh", default="fsdp=-1", help="e.g. data=2,fsdp=4,tensor=2")
    p.add_argument("--batch", type=int, default=8, help="rows per optimizer update")
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--hbm-gib", type=float, default=None, help="memory per device (default 80)")
    p.add_argument("--remat", default="full", choices=["none", "full", "save_dots"])
    p.add_argument("--attention", default="xla", help="attention_impl (xla, blocked, splash, ...)")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--param-dtype", default="float32", choices=["float32", "bfloat16"])
    return parser


def _tasks_path(arg: str | None):
    from pathlib import Path

    if arg:
        return Path(arg)
    return Path(__file__).resolve().parent / "data" / "tasks" / "corpus"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cmd = args.command
    if cmd == "plan":
        from jaxrepair.config import ConfigError, load_config
        from jaxrepair.planner import (
            PlanError,
            format_plan,
            parse_mesh,
            plan_for_config,
            plan_memory,
        )

        try:
            if args.config:
                plan = plan_for_config(
                    load_config(args.config, args.overrides),
                    args.devices,
                    args.hbm_gib,
                    args.kind,
                )
            else:
                plan = plan_memory(
                    args.model,
                    devices=8 if args.devices is None else args.devices,
                    mesh=parse_mesh(args.mesh),
                    global_batch=args.batch,
                    seq_len=args.seq,
                    remat=args.remat,
                    param_dtype=args.param_dtype,
                    hbm_gib=80.0 if args.hbm_gib is None else args.hbm_gib,
                    attention_impl=args.attention,
                    grad_accum=args.grad_accum,
                    kind=args.kind or "sft",
                )
        except (PlanError, ConfigError, FileNotFoundError) as e:
            print(f"jaxrepair plan: {e}", file=sys.stderr)
            return 2
        print(format_plan(plan))
        return 0 if plan.fits else 1
    if cmd == "envs":
        from jaxrepair.envs import load_tasks

        tasks = load_tasks(_tasks_path(args.tasks))
        if args.envs_command == "list":
            for t in tasks:
                print(f"{t.id:40s} {t.category:12s} {t.build_system:8s} {t.split}")
            print(f"{len(tasks)} tasks")
            return 0
        from jaxrepair.envs.corpus_validate import validate_corpus

        report = validate_corpus(
            tasks,
            sandbox_kind=args.backend,
            repeats=args.repeats,
            workers=args.workers,
            sample=args.sample,
        )
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(report.to_dict() if hasattr(report, "to_dict") else report, f, indent=2)
        return 0 if getattr(report, "ok", True) else 1
    if cmd in ("import-hf", "export-hf"):
        # several processes (one per host) convert together: collectives, written once
        from jaxrepair.distributed import maybe_initialize
        from jaxrepair.train.checkpoint import export_hf, import_hf

        maybe_initialize()
        if cmd == "import-hf":
            import_hf(args.hf_dir, args.out)
            print(f"wrote orbax checkpoint {args.out}")
        else:
            export_hf(args.ckpt, args.out, step=args.step)
            print(f"wrote Hugging Face directory {args.out}")
        return 0

    from jaxrepair.config import load_config
    from jaxrepair.distributed import maybe_initialize

    maybe_initialize()
    if cmd == "demo":
        from jaxrepair.demo import run_demo

        run_demo(
            out_dir=args.out, quick=args.quick, config_path=args.config, overrides=args.overrides
        )
        return 0
    config = load_config(args.config, args.overrides)
    if cmd == "sft":
        from jaxrepair.train.sft import run_sft

        summary = run_sft(config)
    elif cmd == "grpo":
        from jaxrepair.train.grpo_trainer import run_grpo

        summary = run_grpo(config)
    else:
        from jaxrepair.train.evaluate import run_eval

        summary = run_eval(config)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `jaxrepair` command: demo, collect, sft, grpo, eval, import-hf, export-hf, serve, envs,
plan.

Heavy imports (JAX, the trainers) happen inside each command so `jaxrepair --help` and the
environment commands start fast and never initialise an accelerator they do not use.

Bad input (a missing file, a wrong setting, a directory in use, an unreachable Docker daemon
or teacher endpoint) ends the command with one line `jaxrepair: error: ...` on stderr and exit
code 2; `jaxrepair --debug ...` shows the traceback instead. Anything else is a bug and keeps
its traceback (exit code 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from jaxrepair.errors import UserError

# Exceptions of modules that import JAX: matched by name only when the module is loaded, so
# the error path never imports JAX itself.
_LAZY_USER_ERRORS = (
    ("jaxrepair.config", "ConfigError"),
    ("jaxrepair.planner", "PlanError"),
    ("jaxrepair.train.checkpoint", "CheckpointError"),
    ("jaxrepair.train.storage", "StorageError"),
    ("jaxrepair.envs.sandbox", "SandboxUnavailable"),
    ("jaxrepair.envs.teacher", "TeacherError"),
)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types reported as one line with exit code 2."""
    types: list[type[BaseException]] = [
        UserError,
        ValueError,  # bad input: ConfigError, PlanError, TaskError, ... are ValueErrors
        FileNotFoundError,
        FileExistsError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
    ]
    for module, name in _LAZY_USER_ERRORS:
        mod = sys.modules.get(module)
        if mod is not None and isinstance(getattr(mod, name, None), type):
            types.append(getattr(mod, name))
    return tuple(types)


def error_line(e: BaseException) -> str:
    """One line for an exception: its own message (never the chain of causes), whitespace
    folded; OSErrors as `reason: path`."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None and str(e).startswith("["):
        msg = f"{e.strerror}: {e.filename}"
    else:
        msg = str(e)
    msg = " ".join(msg.split())
    return msg or type(e).__name__


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxrepair")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


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
    parser.add_argument("--version", action="version", version=f"jaxrepair {_version()}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks for input errors too, and info-level logs",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the paper's whole method at toy scale on this machine")
    _add_config_args(p)
    p.add_argument("--out", default="runs/demo", help="output directory")
    p.add_argument(
        "--quick", action="store_true", help="reduced setting (about 3.5 minutes on 2 cores)"
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="repeat the run with training seeds 0..N-1 and report mean and spread",
    )

    _add_collect_parser(sub)
    for name, text in (
        ("sft", "supervised fine-tuning on agent trajectories"),
        ("grpo", "GRPO against build-validation rewards"),
    ):
        p = sub.add_parser(name, help=text)
        _add_config_args(p)
        g = p.add_mutually_exclusive_group()
        g.add_argument(
            "--new-run",
            action="store_true",
            help="when train.out_dir holds a run, write to the next free OUT_DIR-1, -2, ...",
        )
        g.add_argument(
            "--force-resume",
            action="store_true",
            help="continue the run in train.out_dir even with other settings (recorded in its "
            "history.jsonl)",
        )
    p = sub.add_parser("eval", help="evaluate a checkpoint in the full and simplified pipelines")
    _add_config_args(p)
    p.add_argument(
        "--limit", type=int, default=None, help="evaluate N tasks spread over categories"
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "test_id", "train"],
        help="the corpus split evaluated: test (held-out projects, the default), test_id "
        "(held out in distribution: unseen breakages of the train projects) or train",
    )
    p.add_argument("--pipeline", default="both", choices=["simplified", "full", "both"])
    p.add_argument(
        "--samples",
        type=int,
        default=1,
        help="answers per task (1: greedy; more: sampled at grpo.temperature, for avg@k/pass@k)",
    )
    p.add_argument(
        "--thinking",
        default="on",
        choices=["on", "off", "both"],
        help="Qwen3's thinking switch; both evaluates each model with and without",
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=CHECKPOINT",
        help="also evaluate this run or HF directory with the same settings (repeatable; "
        "the report's mismatch matrix compares them)",
    )
    p.add_argument(
        "--endpoint",
        default=None,
        metavar="URL",
        help="also evaluate an OpenAI-compatible server (its model: --endpoint-model); the "
        "key comes from JAXREPAIR_TEACHER_API_KEY or OPENAI_API_KEY",
    )
    p.add_argument("--endpoint-model", default=None, help="the endpoint's model name")

    p = sub.add_parser("import-hf", help="Hugging Face directory -> orbax checkpoint")
    p.add_argument("hf_dir", help="a transformers save_pretrained directory (Qwen3)")
    p.add_argument("out", help="new (or empty) checkpoint directory")
    p = sub.add_parser("export-hf", help="orbax checkpoint -> Hugging Face directory")
    p.add_argument("ckpt", help="run directory or checkpoint directory")
    p.add_argument("out", help="new (or empty) output directory")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["bfloat16", "float32", "float16"],
        help="dtype of the written weights (default: the checkpoint's, i.e. lossless)",
    )
    p.add_argument(
        "--peft",
        action="store_true",
        help="a LoRA run: write a PEFT adapter directory for its Hugging Face base instead of "
        "merged full weights",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace the model in a non-empty OUT (its old weights, config and tokenizer "
        "files are removed first; other files are kept)",
    )

    p = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP endpoint over a checkpoint (chat with tool calls, "
        "completions, streaming)",
    )
    p.add_argument("checkpoint", help="run directory, orbax checkpoint or Hugging Face directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=0, help="port (0: any free one; the URL is printed)")
    p.add_argument("--step", type=int, default=None, help="orbax checkpoint step (default: latest)")
    p.add_argument(
        "--tokenizer", default=None, help="tokenizer spec or directory (default: the checkpoint's)"
    )
    p.add_argument(
        "--served-model-name", default=None, help="the model id clients send (default: CHECKPOINT)"
    )
    p.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="prompt + completion tokens per request (default: the model's max positions)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="the engine's compute dtype (auto: float32 on CPU, bfloat16 on accelerators)",
    )
    p.add_argument("--slots", type=int, default=16, help="sequences decoded together")
    p.add_argument(
        "--num-blocks",
        type=int,
        default=None,
        help="KV cache blocks (default: enough for one request of --max-model-len)",
    )
    p.add_argument(
        "--engine",
        default="jax",
        help="'jax' (ours) or MODULE:CALLABLE, a callable (ServedModel) -> RolloutEngine",
    )

    p = sub.add_parser("envs", help="code-repair environments")
    envs = p.add_subparsers(dest="envs_command", required=True, metavar="ENVS_COMMAND")
    v = envs.add_parser("validate", help="broken fails, fixed passes, repeatedly, for every task")
    v.add_argument(
        "--tasks",
        action="append",
        default=None,
        help="task folder or .jsonl (default: bundled corpus); repeatable: several sources "
        "validated as one set",
    )
    v.add_argument(
        "--task",
        dest="task_ids",
        action="append",
        default=[],
        metavar="ID",
        help="validate only this task id (repeatable)",
    )
    v.add_argument("--backend", default="local", choices=["local", "docker"])
    v.add_argument("--repeats", type=int, default=3)
    v.add_argument("--workers", type=int, default=2)
    v.add_argument(
        "--sample",
        type=int,
        default=None,
        help="validate a stratified sample of N: spread over build systems, then projects, "
        "then categories (a manifest's tasks are sampled before they are fetched)",
    )
    v.add_argument("--seed", type=int, default=0, help="the sample's seed")
    v.add_argument("--json", dest="json_out", default=None, help="write the report here")
    ls = envs.add_parser("list", help="list tasks with category, build system and split")
    ls.add_argument("--tasks", default=None)
    from jaxrepair.corpus.build_options import add_build_arguments

    bc = envs.add_parser(
        "build-corpus",
        help="build the real-world corpus: fetch pinned projects, break, validate (docs/corpus.md)",
    )
    add_build_arguments(bc)

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


def _add_collect_parser(sub) -> None:
    from jaxrepair.collect import DEFAULT_OUT, POLICIES, SPLITS

    p = sub.add_parser(
        "collect", help="expert or teacher trajectories -> JSONL for `sft` (data.train_paths)"
    )
    p.add_argument("--out", default=DEFAULT_OUT, help=f"trajectory JSONL (default {DEFAULT_OUT})")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    p.add_argument("--tasks", default=None, help="task folder or .jsonl (default: bundled corpus)")
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--ids", default=None, help="comma-separated task ids (any split)")
    p.add_argument("--limit", type=int, default=None, help="N tasks spread over categories")
    p.add_argument("--pipeline", default="simplified", choices=["simplified", "full", "both"])
    p.add_argument("--policy", default="expert", choices=POLICIES)
    p.add_argument(
        "--teacher-url",
        default=None,
        help="OpenAI-compatible base URL (or JAXREPAIR_TEACHER_BASE_URL / OPENAI_BASE_URL); "
        "the key comes from JAXREPAIR_TEACHER_API_KEY or OPENAI_API_KEY",
    )
    p.add_argument("--teacher-model", default=None, help="or JAXREPAIR_TEACHER_MODEL")
    p.add_argument("--temperature", type=float, default=0.0, help="teacher sampling temperature")
    p.add_argument("--max-tokens", type=int, default=2048, help="teacher tokens per reply")
    p.add_argument("--backend", default="local", choices=["local", "docker"])
    p.add_argument("--workers", type=int, default=2, help="episodes at once")
    p.add_argument("--max-steps", type=int, default=30, help="full pipeline: turns per episode")
    p.add_argument("--keep-failed", action="store_true", help="keep unsolved episodes too")
    p.add_argument("--tokenizer", default=None, help="add token counts with this tokenizer")


def _collect(args: argparse.Namespace) -> int:
    from jaxrepair.collect import collect, select_tasks

    ids = [i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else []
    tasks = select_tasks(args.tasks, args.split, ids, args.limit)
    teacher = None
    if args.policy == "teacher":
        from jaxrepair.envs.teacher import TeacherClient

        teacher = TeacherClient(
            base_url=args.teacher_url or "",
            model=args.teacher_model or "",
            temperature=args.temperature,
            max_tokens=args.max_tokens,
        )
    pipelines = ("simplified", "full") if args.pipeline == "both" else (args.pipeline,)
    summary = collect(
        args.out,
        tasks,
        pipelines=pipelines,
        policy=args.policy,
        teacher=teacher,
        backend=args.backend,
        workers=args.workers,
        max_steps=args.max_steps,
        keep_failed=args.keep_failed,
        overwrite=args.overwrite,
        tokenizer=args.tokenizer,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from jaxrepair.engine.server import engine_factory, load_model, serve

    factory = engine_factory(args.engine)
    model = load_model(
        args.checkpoint,
        step=args.step,
        tokenizer=args.tokenizer,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        slots=args.slots,
        num_blocks=args.num_blocks,
    )
    serve(
        model,
        factory,
        host=args.host,
        port=args.port,
        model_name=args.served_model_name,
        ready=lambda url: print(url, flush=True),
    )
    return 0


def _tasks_path(arg: str | None):
    from pathlib import Path

    from jaxrepair.collect import bundled_corpus

    return Path(arg) if arg else bundled_corpus()


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the console command (never an in-process call): see jaxrepair.hostmem
        from jaxrepair.hostmem import reexec_with_hugepages

        reexec_with_hugepages()
    args = build_parser().parse_args(argv)
    if args.debug:
        import logging

        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("jaxrepair").setLevel(logging.INFO)
        return _run(args)
    try:
        return _run(args)
    except user_error_types() as e:
        print(f"jaxrepair: error: {error_line(e)}", file=sys.stderr, flush=True)
        return 2


def _run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "collect":
        return _collect(args)
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
    if cmd == "serve":
        return _serve(args)
    if cmd == "envs" and args.envs_command == "build-corpus":
        from jaxrepair.corpus.build import run as build_corpus

        return build_corpus(args)
    if cmd == "envs" and args.envs_command == "list":
        from jaxrepair.envs import load_tasks

        tasks = load_tasks(_tasks_path(args.tasks))
        for t in tasks:
            print(f"{t.id:40s} {t.category:12s} {t.build_system:8s} {t.split}")
        print(f"{len(tasks)} tasks")
        return 0
    if cmd == "envs":
        from jaxrepair.envs.corpus_validate import load_for_validation, validate_corpus

        if args.sample is not None and args.sample < 1:
            print("jaxrepair envs validate: --sample must be >= 1", file=sys.stderr)
            return 2
        tasks = load_for_validation(
            [_tasks_path(p) for p in args.tasks or [None]],
            task_ids=args.task_ids,
            sample=args.sample,
            seed=args.seed,
        )
        report = validate_corpus(
            tasks,
            sandbox_kind=args.backend,
            repeats=args.repeats,
            workers=args.workers,
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
            export_hf(
                args.ckpt,
                args.out,
                step=args.step,
                dtype=args.dtype,
                replace=args.replace,
                peft=args.peft,
            )
            what = "PEFT adapter" if args.peft else "Hugging Face"
            print(f"wrote {what} directory {args.out}")
        return 0

    from jaxrepair.config import load_config
    from jaxrepair.distributed import maybe_initialize

    maybe_initialize()
    if cmd == "demo":
        from jaxrepair.demo import run_demo, run_demo_seeds

        if args.seeds != 1:
            run_demo_seeds(args.out, args.seeds, args.quick, args.config, args.overrides)
            return 0
        run_demo(
            out_dir=args.out, quick=args.quick, config_path=args.config, overrides=args.overrides
        )
        return 0
    config = load_config(args.config, args.overrides)
    if cmd in ("sft", "grpo"):
        existing = "new" if args.new_run else "force-resume" if args.force_resume else "check"
    if cmd == "sft":
        from jaxrepair.train.sft import run_sft

        summary = run_sft(config, existing=existing)
    elif cmd == "grpo":
        from jaxrepair.train.grpo_trainer import run_grpo

        summary = run_grpo(config, existing=existing)
    else:
        from jaxrepair.envs.teacher import TeacherClient
        from jaxrepair.train.evaluate import PIPELINES, EvalOptions, run_eval

        compare = []
        for item in args.compare:
            label, sep, path = item.partition("=")
            if not sep or not label or not path:
                raise UserError(f"--compare {item!r}: expected LABEL=CHECKPOINT")
            compare.append((label, path))
        endpoint = None
        if args.endpoint is not None:
            endpoint = TeacherClient(
                base_url=args.endpoint,
                model=args.endpoint_model or "",
                temperature=config.grpo.temperature if args.samples > 1 else 0.0,
                max_tokens=config.grpo.max_new_tokens,
            )
        options = EvalOptions(
            limit=args.limit,
            split=args.split,
            pipelines=PIPELINES if args.pipeline == "both" else (args.pipeline,),
            samples=args.samples,
            thinking=args.thinking,
            compare=tuple(compare),
            endpoint=endpoint,
        )
        summary = run_eval(config, options)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

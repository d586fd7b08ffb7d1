"""Environment farm throughput: episodes/s and builds/s for 1, 2 and 4 workers; with
``--backend ray`` also the Ray farm at the same worker counts, its actors on one Ray node and
spread over two, each reported as a ratio to the process farm measured in the same run.

A fixed set of bundled corpus tasks (both build systems) in the simplified pipeline, G
episodes per task as in a GRPO group: expert answers plus some wrong answers (an answer with
no edits, so the broken repo is built and fails). One untimed warm-up round first (dependency
environments, reference test counts, sandbox venv), then each worker count runs the same
episode set once. The validation cache is off unless ``--cache``, so every episode builds.

    python benchmarks/farm_throughput.py                 # JSON + PNG in runs/bench/
    python benchmarks/farm_throughput.py --workers 1,2,4,8 --tasks 12 --group 4 --cache
    python benchmarks/farm_throughput.py --backend ray --repeat 3   # process vs Ray (1, 2 nodes)

The Ray runs use a cluster on this machine (Ray's cluster test utility: a head node without
CPUs, and per worker count one node with that many CPUs, or two nodes with half each, added
and removed around the run), so the ratio measures the Ray farm's own overhead (scheduling,
shipping tasks by content, the cache server), not a network. With ``--repeat R`` every farm
runs R times per worker count, in rotating order, and the median episodes/s is reported
(single runs on a busy machine vary by tens of percent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxrepair.envs import load_tasks  # noqa: E402
from jaxrepair.envs.expert import ExpertPolicy  # noqa: E402
from jaxrepair.envs.farm import EnvFarm, run_episodes_with_policy  # noqa: E402
from jaxrepair.envs.farm_scheduler import FarmScheduler  # noqa: E402

CORPUS = ROOT / "jaxrepair" / "data" / "tasks" / "corpus"
WRONG = "I think the build is fine as it is; no changes are needed."


def pick_tasks(n: int) -> list:
    """n tasks, alternating build systems and spread over categories (sorted ids: fixed)."""
    tasks = sorted(load_tasks(CORPUS), key=lambda t: t.id)
    by_key: dict[tuple[str, str], list] = {}
    for t in tasks:
        by_key.setdefault((t.build_system, t.category), []).append(t)
    out = []
    while len(out) < n and any(by_key.values()):
        for key in sorted(by_key, key=lambda k: (k[1], k[0])):
            if by_key[key] and len(out) < n:
                out.append(by_key[key].pop(0))
    return out


def episode_set(tasks: list, group: int, wrong_every: int) -> tuple[list, dict]:
    specs, answers = [], {}
    for t in tasks:
        good = ExpertPolicy(t).simplified_answer()
        for g in range(group):
            eid = f"{t.id}/{g}"
            specs.append((eid, t, "simplified"))
            answers[eid] = WRONG if wrong_every and g % wrong_every == wrong_every - 1 else good
    return specs, answers


@contextlib.contextmanager
def process_farm(workers: int, common: dict) -> Iterator[FarmScheduler]:
    with EnvFarm(workers=workers, **common) as farm:
        yield farm


class RayNodes:
    """A Ray cluster on this machine whose worker nodes are added per measurement: a farm
    asks for one unit of the measurement's own resource, which only its nodes hold."""

    def __init__(self) -> None:
        import ray
        from ray.cluster_utils import Cluster

        self.ray = ray
        self.cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
        )
        ray.init(address=self.cluster.address, log_to_driver=False)
        self.n = 0

    @contextlib.contextmanager
    def farm(self, nodes: int, workers: int, common: dict) -> Iterator[FarmScheduler]:
        """A Ray farm whose actors land on `nodes` new nodes sharing `workers` CPUs."""
        from jaxrepair.envs.ray_farm import RayFarm

        self.n += 1
        res = f"bench{self.n}"
        per = -(-workers // nodes)
        added = [self.cluster.add_node(num_cpus=per, resources={res: per}) for _ in range(nodes)]
        try:
            self.cluster.wait_for_nodes()
            with RayFarm(workers=workers, resources={res: 1}, **common) as farm:
                yield farm
        finally:
            for node in added:
                self.cluster.remove_node(node)

    def shutdown(self) -> None:
        self.ray.shutdown()
        self.cluster.shutdown()


def run_config(
    make_farm, workers: int, specs: list, answers: dict, args: argparse.Namespace, tag: str
) -> dict:
    cache_dir = tempfile.mkdtemp(prefix="farm-bench-cache-") if args.cache else None
    t0 = time.perf_counter()
    common = dict(
        sandbox_kind=args.sandbox,
        sandbox_opts={"unisolated": True} if args.unisolated else None,
        step_timeout_s=args.step_timeout,
        cache_dir=cache_dir,
    )
    with make_farm(workers, common) as farm:
        spawn_s = time.perf_counter() - t0
        named = [(f"{tag}:{eid}", t, p) for eid, t, p in specs]
        t1 = time.perf_counter()
        results = asyncio.run(
            run_episodes_with_policy(farm, named, lambda eid, obs: answers[eid.split(":", 1)[1]])
        )
        wall = time.perf_counter() - t1
        m, acc = farm.metrics(), farm.accounting()
    outcomes: dict[str, int] = {}
    for r in results.values():
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    return {
        "workers": workers,
        "episodes": len(specs),
        "wall_s": wall,
        "spawn_s": spawn_s,
        "episodes_per_s": len(specs) / wall,
        "builds": m["builds"],
        "builds_per_s": m["builds"] / wall,
        "cache_hits": m["cache_hits"],
        "worker_busy_fraction": m["worker_busy_fraction"],
        "retries": m["retries"],
        "worker_restarts": m["worker_restarts"],
        "outcomes": outcomes,
        "accounting_complete": acc["complete"],
    }


def plot(rows: list[dict], path: Path, title: str) -> None:
    """episodes/s and builds/s per worker count, one bar per farm (grouped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    farms = list(dict.fromkeys(r["farm"] for r in rows))
    workers = list(dict.fromkeys(r["workers"] for r in rows))
    width = 0.8 / len(farms)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in (
        (axes[0], "episodes_per_s", "episodes/s"),
        (axes[1], "builds_per_s", "builds/s"),
    ):
        for j, farm in enumerate(farms):
            xs, ys = [], []
            for i, w in enumerate(workers):
                r = next((r for r in rows if r["farm"] == farm and r["workers"] == w), None)
                if r is not None:
                    xs.append(i + (j - (len(farms) - 1) / 2) * width)
                    ys.append(r[key])
                    ratio = r.get("ratio_to_process")
                    note = f"{r[key]:.2f}" if ratio is None else f"{ratio:.2f}x"
                    ax.annotate(note, (xs[-1], ys[-1]), ha="center", va="bottom", fontsize=7)
            ax.bar(xs, ys, width, label=farm)
        ax.set_xticks(range(len(workers)), [str(w) for w in workers])
        ax.set_xlabel("farm workers")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    ap.add_argument(
        "--backend",
        default="process",
        choices=("process", "ray"),
        help="ray: the process farm, then the Ray farm on one and on two Ray nodes",
    )
    ap.add_argument("--tasks", type=int, default=8, help="corpus tasks in the fixed set")
    ap.add_argument("--group", type=int, default=4, help="episodes per task (a GRPO group)")
    ap.add_argument(
        "--wrong-every",
        type=int,
        default=4,
        help="every k-th episode of a group answers wrongly (0: none)",
    )
    ap.add_argument("--sandbox", default="local", choices=("local", "docker"))
    ap.add_argument("--unisolated", action="store_true", help="local sandbox without bubblewrap")
    ap.add_argument(
        "--cache", action="store_true", help="validation cache on (identical answers built once)"
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs per farm and worker count (median reported)"
    )
    ap.add_argument("--step-timeout", type=float, default=300.0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    args = ap.parse_args()
    workers = [int(x) for x in args.workers.split(",") if x.strip()]
    if not workers or min(workers) < 1:
        ap.error(f"--workers must list positive integers, got {args.workers!r}")
    if args.tasks < 1 or args.group < 1 or args.repeat < 1:
        ap.error("--tasks, --group and --repeat must be >= 1")

    tasks = pick_tasks(args.tasks)
    specs, answers = episode_set(tasks, args.group, args.wrong_every)
    print(
        f"{len(tasks)} tasks ({', '.join(t.id for t in tasks)}), {len(specs)} episodes per config"
    )
    t0 = time.perf_counter()
    warm = run_config(process_farm, max(workers), specs[:: args.group], answers, args, "warmup")
    print(
        f"warm-up: {warm['episodes']} episodes in {time.perf_counter() - t0:.1f}s ({warm['outcomes']})"
    )
    farms: list[tuple[str, object]] = [("process", process_farm)]
    ray_nodes = RayNodes() if args.backend == "ray" else None
    if ray_nodes is not None:
        farms += [
            ("ray-1node", functools.partial(ray_nodes.farm, 1)),
            ("ray-2nodes", functools.partial(ray_nodes.farm, 2)),
        ]
    rows = []
    try:
        for w in workers:
            runs: dict[str, list[dict]] = {name: [] for name, _ in farms}
            for rep in range(args.repeat):  # one sitting per worker count; the order rotates
                k = rep % len(farms)
                for name, make in farms[k:] + farms[:k]:
                    tag = f"{name}-w{w}-r{rep}"
                    row = run_config(make, w, specs, answers, args, tag)
                    runs[name].append(row)
                    print(
                        f"  {name:>10} workers={w} run {rep}: {row['episodes_per_s']:.3f} episodes/s"
                    )
            base = statistics.median(r["episodes_per_s"] for r in runs["process"])
            for name, _ in farms:
                eps = [r["episodes_per_s"] for r in runs[name]]
                med = statistics.median(eps)
                row = min(runs[name], key=lambda r: abs(r["episodes_per_s"] - med))
                row = {"farm": name, **row, "episodes_per_s": med, "runs_episodes_per_s": eps}
                if name != "process":
                    row["ratio_to_process"] = med / base
                rows.append(row)
    finally:
        if ray_nodes is not None:
            ray_nodes.shutdown()

    hdr = (
        f"{'farm':>10} {'workers':>7} {'episodes':>8} {'wall s':>8} {'episodes/s':>10} "
        f"{'vs process':>10} {'builds':>6} {'builds/s':>8} {'cache hits':>10} {'busy':>5} outcomes"
    )
    print("\n" + hdr)
    for r in rows:
        ratio = r.get("ratio_to_process")
        print(
            f"{r['farm']:>10} {r['workers']:>7} {r['episodes']:>8} {r['wall_s']:>8.1f} "
            f"{r['episodes_per_s']:>10.3f} {'' if ratio is None else f'{ratio:.3f}':>10} "
            f"{r['builds']:>6} {r['builds_per_s']:>8.3f} {r['cache_hits']:>10} "
            f"{r['worker_busy_fraction']:>5.2f} {r['outcomes']}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "farm_throughput" + ("_ray" if args.backend == "ray" else "")
    stem += "_cache" if args.cache else ""
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_after": os.getloadavg(),
    }
    report = {
        "benchmark": "farm_throughput",
        "backend": args.backend,
        "pipeline": "simplified",
        "sandbox": args.sandbox + (" (unisolated)" if args.unisolated else ""),
        "cache": args.cache,
        "tasks": [t.id for t in tasks],
        "group": args.group,
        "wrong_every": args.wrong_every,
        "repeat": args.repeat,
        "machine": machine,
        "warmup": warm,
        "results": rows,
    }
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    title = (
        f"farm throughput, simplified pipeline, {len(specs)} episodes, {args.sandbox} sandbox, "
        f"cache {'on' if args.cache else 'off'}, {machine['cpus']} CPUs"
        + ("; labels: Ray / process at equal workers" if ray_nodes is not None else "")
    )
    plot(rows, out / f"{stem}.png", title)
    print(f"\nwrote {out / (stem + '.json')} and {out / (stem + '.png')}")


if __name__ == "__main__":
    main()

"""`eval/report.md`: an evaluation's results and the paper's analyses as Markdown and PNGs.

Input: episode records (`episode_record`), grouped as {model: {pipeline: [record, ...]}}; a
"model" is any evaluated policy (a checkpoint, the same checkpoint with thinking off, an
outside endpoint). The report holds, per model and pipeline, success with its 95% interval,
avg@k and pass@k, the breakdown by category, build system and split, turns, tool calls,
tokens, truncation, infra-error and tamper rates; the train x eval mismatch matrix when several
models are evaluated; and each model's tool-use Markov chain and tool shares. Results are
never pooled across pipelines (the paper's central finding is that they do not transfer).
"""

from __future__ import annotations

import collections
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxrepair.envs.task import Task
from jaxrepair.envs.tools import TOOL_NAMES
from jaxrepair.train.analysis import (
    MarkovChain,
    mismatch_matrix,
    success_summary,
    tool_markov_chain,
    wilson_interval,
)
from jaxrepair.train.rollout import Rollout

__all__ = ["episode_record", "report_ks", "summarize_records", "write_report"]

Records = Sequence[Mapping[str, Any]]
Evaluations = Mapping[str, Mapping[str, Records]]  # model -> pipeline -> episode records
BREAKDOWNS = ("category", "build_system", "split")


def episode_record(r: Rollout, task: Task, pipeline: str) -> dict[str, Any]:
    """An evaluated episode as a JSON-safe record: the trajectory and what the report groups
    it by."""
    return {
        **r.trajectory(pipeline),
        "category": task.category,
        "build_system": task.build_system,
        "split": task.split,
        "valid": r.valid,
    }


def report_ks(samples: int) -> tuple[int, ...]:
    """The k of the pass@k reported for `samples` answers per task: 1, and all of them."""
    return (1, samples) if samples > 1 else (1,)


def summarize_records(records: Records, ks: Sequence[int] = (1,)) -> dict[str, Any]:
    """Success (avg@k, pass@k, intervals) over the scored episodes, the per-group breakdown,
    and the episode-level rates (over every episode, infra errors included)."""
    scored = [r for r in records if r.get("valid", True)]
    by_task: dict[str, list[bool]] = collections.defaultdict(list)
    for r in scored:
        by_task[r["task_id"]].append(r["reward"] > 0)
    n_all = max(1, len(records))
    n = max(1, len(scored))
    out = success_summary(by_task, ks)
    out.update(
        episodes=len(records),
        scored=len(scored),
        infra_errors=len(records) - len(scored),
        # the share of tasks solved by at least one of their samples
        tasks_solved_rate=sum(any(v) for v in by_task.values()) / max(1, len(by_task)),
        per_task={t: sum(v) / len(v) for t, v in sorted(by_task.items())},
        infra_error_rate=(len(records) - len(scored)) / n_all,
        truncation_rate=sum(bool(r.get("truncated")) for r in scored) / n,
        tamper_rate=sum(bool(r.get("tampered")) for r in scored) / n,
        mean_turns=float(np.mean([_turns(r) for r in scored])) if scored else 0.0,
        mean_tool_calls=float(np.mean([r.get("tool_calls", 0) for r in scored])) if scored else 0.0,
        mean_generated_tokens=float(
            np.mean([r.get("token_counts", {}).get("generated", 0) for r in scored])
        )
        if scored
        else 0.0,
    )
    for key in BREAKDOWNS:
        groups: dict[str, list[bool]] = collections.defaultdict(list)
        for r in scored:
            groups[str(r.get(key) or "?")].append(r["reward"] > 0)
        out[f"by_{key}"] = {
            g: {
                "n": len(v),
                "success_rate": sum(v) / len(v),
                "ci": list(wilson_interval(sum(v), len(v))),
            }
            for g, v in sorted(groups.items())
        }
    return out


def _turns(r: Mapping[str, Any]) -> int:
    return sum(m.get("role") == "assistant" for m in r.get("messages", ()))


def _chain(records: Records) -> MarkovChain:
    scored = [r.get("messages", []) for r in records if r.get("valid", True)]
    return tool_markov_chain(scored, tools=TOOL_NAMES)


# ----------------------------------------------------------------------------- plots
def _png(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    path.write_bytes(buf.getvalue())
    return path


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _success_plot(summaries: Mapping[str, Mapping[str, dict]], path: Path) -> Path:
    plt = _plt()
    models = list(summaries)
    pipelines = sorted({p for v in summaries.values() for p in v})
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(models) * len(pipelines)), 3.5))
    width = 0.8 / max(1, len(pipelines))
    for j, p in enumerate(pipelines):
        xs, ys, lo, hi = [], [], [], []
        for i, m in enumerate(models):
            s = summaries[m].get(p)
            if s is None:
                continue
            xs.append(i + j * width)
            ys.append(s["success_rate"])
            lo.append(s["success_rate"] - s["success_ci"][0])
            hi.append(s["success_ci"][1] - s["success_rate"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=p)
    ax.set_xticks([i + width * (len(pipelines) - 1) / 2 for i in range(len(models))], models)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success (95% CI)")
    ax.legend(title="pipeline")
    return _png(fig, path)


def _heatmap(
    m: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, path: Path
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(cols), 1.0 + 0.5 * len(rows)))
    im = ax.imshow(np.nan_to_num(m, nan=0.0), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not np.isnan(m[i, j]) and (m.size <= 64 or m[i, j] > 0):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return _png(fig, path)


def _share_plot(chains: Mapping[str, MarkovChain], path: Path) -> Path:
    plt = _plt()
    tools = list(TOOL_NAMES)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / max(1, len(chains))
    for j, (name, chain) in enumerate(chains.items()):
        share = chain.tool_share
        ax.bar(
            [i + j * width for i in range(len(tools))],
            [share.get(t, 0.0) for t in tools],
            width,
            label=name,
        )
    ax.set_xticks([i + width * (len(chains) - 1) / 2 for i in range(len(tools))], tools)
    ax.tick_params(axis="x", rotation=45)
    ax.set_ylabel("share of tool calls")
    ax.legend()
    return _png(fig, path)


# ----------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_report(
    out_dir: str | Path,
    evaluations: Evaluations,
    ks: Sequence[int] = (1,),
    title: str = "Evaluation",
) -> Path:
    """Write `out_dir/report.md`, `out_dir/summary.json` and the PNGs; return the report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {
        m: {p: summarize_records(recs, ks) for p, recs in per.items()}
        for m, per in evaluations.items()
    }
    chains = {
        m: _chain([r for recs in per.values() for r in recs]) for m, per in evaluations.items()
    }
    lines = [f"# {title}", ""]
    lines += [
        "Success is over scored episodes (infra errors excluded, counted separately); "
        "intervals are 95% (Wilson for success, normal over tasks for avg@k and pass@k).",
        "",
        "## Success per model and pipeline",
        "",
    ]
    ks_shown = [
        k for k in ks if any(f"pass_at_{k}" in s for v in summaries.values() for s in v.values())
    ]
    head = ["model", "pipeline", "tasks", "episodes", "success [95% CI]", "avg@k"]
    head += [f"pass@{k}" for k in ks_shown]
    head += ["turns", "tool calls", "gen. tokens", "truncated", "infra errors", "tampered"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, per in summaries.items():
        for p, s in per.items():
            lo, hi = s["success_ci"]
            row = [m, p, str(s["tasks"]), str(s["episodes"])]
            row.append(f"{_pct(s['success_rate'])} [{_pct(lo)}, {_pct(hi)}]")
            row.append(_pct(s["avg_at_k"]))
            row += [_pct(s[f"pass_at_{k}"]) if f"pass_at_{k}" in s else "-" for k in ks_shown]
            row += [
                f"{s['mean_turns']:.2f}",
                f"{s['mean_tool_calls']:.2f}",
                f"{s['mean_generated_tokens']:.0f}",
                _pct(s["truncation_rate"]),
                _pct(s["infra_error_rate"]),
                _pct(s["tamper_rate"]),
            ]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"![success]({_success_plot(summaries, out / 'success.png').name})", ""]

    for key in BREAKDOWNS:
        lines += [f"## Success by {key.replace('_', ' ')}", ""]
        lines += [f"| model | pipeline | {key} | n | success [95% CI] |", "|---|---|---|---|---|"]
        for m, per in summaries.items():
            for p, s in per.items():
                for g, v in s[f"by_{key}"].items():
                    lo, hi = v["ci"]
                    lines.append(
                        f"| {m} | {p} | {g} | {v['n']} | {_pct(v['success_rate'])} "
                        f"[{_pct(lo)}, {_pct(hi)}] |"
                    )
        lines.append("")

    pipelines = sorted({p for per in summaries.values() for p in per})
    if len(summaries) > 1:
        rows, cols, mat = mismatch_matrix(
            {m: {p: s["success_rate"] for p, s in per.items()} for m, per in summaries.items()},
            pipelines,
        )
        png = _heatmap(mat, rows, cols, "success: model x eval pipeline", out / "mismatch.png")
        lines += ["## Mismatch matrix (model x evaluation pipeline)", ""]
        lines += ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for i, r in enumerate(rows):
            cells = ["-" if np.isnan(v) else _pct(v) for v in mat[i]]
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
        lines += ["", f"![mismatch]({png.name})", ""]

    lines += ["## Tool use", ""]
    lines += ["Share of tool calls per model:", ""]
    lines += ["| tool | " + " | ".join(chains) + " |", "|---|" + "---|" * len(chains)]
    for t in TOOL_NAMES:
        lines.append(
            f"| {t} | " + " | ".join(_pct(c.tool_share.get(t, 0.0)) for c in chains.values()) + " |"
        )
    lines += ["", f"![tool share]({_share_plot(chains, out / 'tool_share.png').name})", ""]
    for m, chain in chains.items():
        probs = chain.probabilities
        png = _heatmap(
            probs[:-1, 1:],
            chain.states[:-1],
            chain.states[1:],
            f"{m}: P(next | call)",
            out / f"markov_{_slug(m)}.png",
        )
        lines += [f"### Markov chain of tool calls: {m}", ""]
        top = sorted(
            (
                (float(probs[i, j]), a, b, int(chain.counts[i, j]))
                for i, a in enumerate(chain.states)
                for j, b in enumerate(chain.states)
                if chain.counts[i, j] > 0
            ),
            key=lambda x: (-x[3], x[1], x[2]),
        )
        lines += ["| from | to | P | count |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {p:.3f} | {n} |" for p, a, b, n in top[:20]]
        lines += ["", f"![markov {m}]({png.name})", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(
        json.dumps(
            {
                "summaries": summaries,
                "markov": {m: c.to_dict() for m, c in chains.items()},
            },
            indent=2,
        )
    )
    return report

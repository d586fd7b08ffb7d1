"""A training run's directory: resumed with the same settings, never silently rewritten.

Why: rerunning `jaxrepair sft` into a directory that holds a run with other settings used to
resume the old run (training nothing when it was finished) while overwriting its
config.toml and summary.json, so the directory described a run that never happened.

The rule, decided once for every command that trains (`sft`, `grpo`):

* `out_dir` holds no run: start one there.
* It holds a run of the same kind whose settings equal this config, apart from the
  resume-neutral keys in `NEUTRAL_KEYS` (length, logging and checkpoint cadence, mesh and
  execution choices that do not change what a step computes): resume it.
* Anything else (other settings, another kind of run, `train.resume=false`, checkpoints
  without a config.toml) is refused with one line naming the differing keys, unless the
  caller asks explicitly: `existing="new"` writes to the next free versioned directory
  (`run-1`, `run-2`, ...), `existing="force-resume"` continues the run with the new settings.

Nothing is lost either way: every session appends a start line (kind, time, command,
settings changed against the directory's config) and an end line (its summary) to
`history.jsonl`; `config.toml` and `summary.json` hold the latest session's config and summary.

With several processes, process 0 decides and every process applies the same decision to its
own `train.out_dir` (each process's path is kept, so a host that does not share the
directory still fails the shared-storage check).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import tomllib
from collections.abc import Mapping
from typing import Any

from etils import epath

from jaxrepair import multihost
from jaxrepair.config import RunConfig
from jaxrepair.errors import UserError
from jaxrepair.train.storage import is_uri, run_path, write_text_once

MODES = ("check", "new", "force-resume")
KINDS = ("sft", "grpo")

# Keys that may differ when a run is resumed: how long and how often, where and how fast it
# runs; none changes the math of a training step (up to float rounding).
NEUTRAL_KEYS = frozenset(
    {
        "train.steps",
        "train.log_every",
        "train.eval_every",
        "train.checkpoint_every",
        "train.checkpoint_keep",
        "train.out_dir",
        "mesh.data",
        "mesh.fsdp",
        "mesh.tensor",
        "mesh.devices",
        "mesh.hbm_gib",
        "model.remat",
        "model.attention_impl",
        "model.moe_impl",
        "model.scan_layers",
        "data.eval_paths",
        "grpo.generate_batch",
        "envs.workers",
        "envs.retries",
        "envs.latency_jitter_s",
        "envs.cache_validation",
    }
)

CONFIG_FILE = "config.toml"
SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.jsonl"


class RunDirInUse(UserError):
    """`train.out_dir` holds a run that this command would not continue as it is."""


@dataclasses.dataclass(frozen=True)
class RunDir:
    """Where a training session writes and why."""

    path: epath.Path
    config: RunConfig  # with train.out_dir set to `path`
    kind: str
    state: str  # "new", "resume" or "force-resume"
    changes: dict[str, list[Any]]  # "section.key" -> [in the directory, in this config]


def flat_config(config: RunConfig) -> dict[str, Any]:
    """`section.key` -> value of a RunConfig (tuples as lists)."""
    return {f"{s}.{k}": v for s, sec in config.to_dict().items() for k, v in sec.items()}


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Keys whose values differ between two flat configs: key -> [old, new]."""
    return {
        k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    }


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 40 else s[:37] + "..."


def describe_changes(changes: Mapping[str, list[Any]], limit: int = 6) -> str:
    """`optim.lr: 0.003 -> 0.001, ...` for a message (the first `limit` keys)."""
    items = [f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in changes.items()]
    more = f", and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _read_lines(path: epath.Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of an interrupted write
    return out


def append_jsonl(path: epath.Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line from process 0 (local: a real append; storage URIs: rewrite)."""
    if not multihost.is_primary():
        return
    line = json.dumps(record, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_uri(path):
        old = path.read_text() if path.exists() else ""
        path.write_text(old + line)
    else:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)


def _has_checkpoints(path: epath.Path) -> bool:
    ck = path / "checkpoints"
    return ck.is_dir() and any(c.name.isdigit() for c in ck.iterdir())


def _previous_kind(path: epath.Path) -> str | None:
    for rec in _read_lines(path / HISTORY_FILE):
        if rec.get("event") == "start" and rec.get("kind"):
            return str(rec["kind"])
    return None


def _load_previous(path: epath.Path) -> dict[str, Any]:
    from jaxrepair.config import ConfigError, RunConfig

    f = path / CONFIG_FILE
    try:
        return flat_config(RunConfig.from_dict(tomllib.loads(f.read_text()), source=str(f)))
    except (ConfigError, tomllib.TOMLDecodeError) as e:
        raise RunDirInUse(
            f"{path} holds a run whose {CONFIG_FILE} this version cannot read ({e}); choose "
            "another train.out_dir, or pass --new-run"
        ) from None


def next_free(path: epath.Path) -> epath.Path:
    """`path-1`, `path-2`, ...: the first that does not exist."""
    k = 1
    while True:
        cand = path.parent / f"{path.name}-{k}"
        if not cand.exists():
            return cand
        k += 1


def in_use(path: epath.Path) -> bool:
    """True when `path` holds a run: checkpoints, or the summary of a finished session. A
    config.toml alone (a session that stopped before its first checkpoint) holds nothing to
    resume; it is replaced, and kept in history.jsonl."""
    return _has_checkpoints(path) or (path / SUMMARY_FILE).is_file()


def decide(config: RunConfig, kind: str, existing: str = "check") -> dict[str, Any]:
    """Process 0's decision for `config.train.out_dir`: {"version": k or None, "state",
    "changes"}; raises RunDirInUse naming what differs."""
    path = run_path(config.train.out_dir)
    if not in_use(path):
        return {"version": None, "state": "new", "changes": {}}
    if existing == "new":
        nxt = next_free(path)
        return {"version": int(nxt.name.rsplit("-", 1)[1]), "state": "new", "changes": {}}
    hint = f"choose another train.out_dir, or pass --new-run (writes {next_free(path)})"
    if not (path / CONFIG_FILE).is_file():
        if existing == "force-resume":
            return {"version": None, "state": "force-resume", "changes": {}}
        raise RunDirInUse(
            f"{path} holds checkpoints but no {CONFIG_FILE}, so it is not a jaxrepair run "
            f"directory; use it as train.init_from, {hint}"
        )
    prev_kind = _previous_kind(path)
    if prev_kind is not None and prev_kind != kind:
        raise RunDirInUse(f"{path} holds {_a(prev_kind)} run, not {_a(kind)} run; {hint}")
    if not config.train.resume:
        raise RunDirInUse(
            f"train.resume=false would start {path} over, but it holds {_a(prev_kind or kind)} "
            f"run; {hint}"
        )
    changes = config_changes(_load_previous(path), flat_config(config))
    blocking = {k: v for k, v in changes.items() if k not in NEUTRAL_KEYS}
    if blocking and existing != "force-resume":
        raise RunDirInUse(
            f"{path} holds {_a(prev_kind or kind)} run with other settings "
            f"({describe_changes(blocking)}); rerun with its settings to resume it, {hint}, "
            "or --force-resume to continue it with these"
        )
    state = "force-resume" if blocking else "resume"
    return {"version": None, "state": state, "changes": changes}


def prepare_run_dir(config: RunConfig, kind: str, existing: str = "check") -> RunDir:
    """Decide where this session writes (see the module docstring), then write config.toml
    and a start line to history.jsonl. Every process must call it (a collective)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    if existing not in MODES:
        raise ValueError(f"existing={existing!r}; expected one of {MODES}")
    verdict: dict[str, Any] | str | None = None
    if multihost.is_primary():
        try:
            verdict = decide(config, kind, existing)
        except RunDirInUse as e:
            verdict = str(e)
    verdict = multihost.broadcast_object(verdict)
    if isinstance(verdict, str):
        raise RunDirInUse(verdict)
    assert isinstance(verdict, dict)
    if verdict["version"] is not None:
        out_dir = f"{config.train.out_dir.rstrip('/')}-{verdict['version']}"
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, out_dir=out_dir)
        )
    path = run_path(config.train.out_dir)
    run = RunDir(path, config, kind, verdict["state"], verdict["changes"])
    if multihost.is_primary():
        path.mkdir(parents=True, exist_ok=True)
        old_summary = path / SUMMARY_FILE
        if old_summary.is_file() and not (path / HISTORY_FILE).is_file():
            # a directory from before history.jsonl: keep its summary before it is replaced
            append_jsonl(
                path / HISTORY_FILE, {"event": "previous_summary", "summary": _json(old_summary)}
            )
        if run.state == "force-resume":
            import logging

            logging.getLogger(__name__).warning(
                "%s: continuing the run with other settings (%s); recorded in %s",
                path,
                describe_changes(run.changes),
                HISTORY_FILE,
            )
    start: dict[str, Any] = {
        "event": "start",
        "kind": kind,
        "time": _now(),
        "state": run.state,
        "command": sys.argv,
        "changes": run.changes,
    }
    if run.state == "new" and multihost.is_primary() and (path / CONFIG_FILE).is_file():
        start["replaced_config"] = (path / CONFIG_FILE).read_text()  # a session that saved nothing
    write_text_once(path / CONFIG_FILE, config.to_toml())
    append_jsonl(path / HISTORY_FILE, start)
    return run


def finish_run(run: RunDir, summary: Mapping[str, Any]) -> None:
    """The session's summary: summary.json (the latest) and an end line in history.jsonl."""
    write_text_once(run.path / SUMMARY_FILE, json.dumps(summary, indent=2, default=str))
    append_jsonl(
        run.path / HISTORY_FILE,
        {"event": "end", "kind": run.kind, "time": _now(), "summary": summary},
    )


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" or kind == "sft" else f"a {kind}"


def _json(path: epath.Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return path.read_text()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


__all__ = [
    "HISTORY_FILE",
    "MODES",
    "NEUTRAL_KEYS",
    "RunDir",
    "RunDirInUse",
    "append_jsonl",
    "config_changes",
    "decide",
    "describe_changes",
    "finish_run",
    "flat_config",
    "in_use",
    "next_free",
    "prepare_run_dir",
]

"""SFT, checkpoints, preemption and export as 2 JAX processes x 4 CPU devices (the real CLI).

The oracle is the same run as one process with 8 devices on the same mesh (data=2, fsdp=4):
final parameters must be bitwise equal, on every process and in every checkpoint.

Runs (module-scoped, shared by the tests):
  ref      1 process x 8 devices, 8 steps, uninterrupted
  pre      2 processes, SIGTERM to process 1 only once training starts: both must stop and
           save at the same step and exit 0
  resumed  2 processes resuming `pre`, with a newer step injected that lacks its commit
           marker: process 0 must quarantine it and both must restore the agreed step
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.multiprocess.harness import (
    assert_params_equal,
    check_digests,
    launch_cli,
    load_checkpoint_params,
    read_summaries,
    start_cli,
    write_tiny_sft,
)

STEPS = 8


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sft_mp")
    write_tiny_sft(d, steps=STEPS, checkpoint_every=4, mesh=(2, 4, 1))
    return d


def _sft(work: Path, out: str, *extra: str) -> list[str]:
    return ["sft", str(work / "tiny_sft.toml"), "--set", f"train.out_dir={out}", *extra]


@pytest.fixture(scope="module")
def ref(work: Path) -> dict:
    results = launch_cli(_sft(work, "ref"), num_processes=1, devices_per_process=8, cwd=work)
    return {"dir": work / "ref", "summaries": read_summaries(results)}


@pytest.fixture(scope="module")
def preempted(work: Path) -> dict:
    group = start_cli(_sft(work, "run"), cwd=work)
    group.wait_for_output(0, f"0/{STEPS} [", timeout_s=180)  # process 0's progress bar is up
    group.send_signal(1)  # a preempted host: process 1 only
    results = group.wait(180)
    return {"dir": work / "run", "results": results, "summaries": read_summaries(results)}


@pytest.fixture(scope="module")
def resumed(work: Path, ref: dict, preempted: dict) -> dict:
    run = preempted["dir"] / "checkpoints"
    saved = preempted["summaries"][0]["step"]
    # a newer step whose save "did not finish": orbax can list it, its commit marker is missing
    shutil.copytree(ref["dir"] / "checkpoints" / str(STEPS), run / str(STEPS))
    (run / str(STEPS) / "jaxrepair_commit.json").unlink()
    results = launch_cli(_sft(work, "run"), cwd=work)
    return {"dir": preempted["dir"], "saved": saved, "summaries": read_summaries(results)}


def test_preemption_of_one_process_stops_all_at_the_same_step(preempted: dict) -> None:
    """SIGTERM to process 1 only: both processes exit 0, preempted, at the same step, and
    that step is committed once (by process 0) in the shared checkpoint directory."""
    s0, s1 = preempted["summaries"]
    assert all(r.returncode == 0 for r in preempted["results"])
    assert s0["preempted"] and s1["preempted"]
    assert s0["step"] == s1["step"] and 0 < s0["step"] < STEPS
    step_dir = preempted["dir"] / "checkpoints" / str(s0["step"])
    marker = json.loads((step_dir / "jaxrepair_commit.json").read_text())
    assert marker["step"] == s0["step"]
    summary = json.loads((preempted["dir"] / "summary.json").read_text())
    assert summary["preempted"] is True and summary["step"] == s0["step"]


def test_resume_restores_the_agreed_step_and_matches_one_process(ref: dict, resumed: dict) -> None:
    """2 processes resume (process 0 quarantines the unfinished newer step, both restore the
    preempted step) and end bitwise equal to the uninterrupted 1-process 8-device run: in
    the saved checkpoint and in every process's own shards in memory."""
    s0, s1 = resumed["summaries"]
    assert s0["resumed"] and s1["resumed"]
    assert s0["step"] == s1["step"] == STEPS and not s0["preempted"]
    quarantined = list((resumed["dir"] / "checkpoints" / "quarantine").iterdir())
    assert [q.name.split("-")[0] for q in quarantined] == [str(STEPS)]
    assert "no commit marker" in (quarantined[0] / "REASON.txt").read_text()
    want = load_checkpoint_params(ref["dir"])
    assert_params_equal(load_checkpoint_params(resumed["dir"]), want)
    got = check_digests(resumed["summaries"], want)
    assert got["processes"] == 2 and got["shards"] >= 2 * len(want)
    check_digests(ref["summaries"], want)  # the reference's own shards agree with its save


def test_metrics_rows_written_once(ref: dict, resumed: dict) -> None:
    """metrics.jsonl of the 2-process run (preempted, then resumed) has each step exactly
    once, with the 1-process run's losses (same data, same updates)."""
    rows = [json.loads(x) for x in (resumed["dir"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    ref_rows = [json.loads(x) for x in (ref["dir"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]


def test_private_out_dir_per_process_fails_fast_with_a_clear_message(work: Path) -> None:
    """Each process with its own out_dir (hosts without shared storage): every process
    exits non-zero naming the problem, well before orbax would hang."""
    t0 = time.monotonic()
    results = launch_cli(
        _sft(work, "unused"),
        cwd=work,
        per_process_args=[["--set", f"train.out_dir=private{i}"] for i in range(2)],
        check=False,
        timeout_s=120,
    )
    elapsed = time.monotonic() - t0
    for r in results:
        assert r.returncode != 0
        assert "is not shared by all 2 processes" in r.stderr, r.stderr[-2000:]
        assert "cannot see the file .shared-check-" in r.stderr
    assert elapsed < 90  # start-up + data + the check (which itself gives up within 30 s)
    assert not any((work / f"private{i}" / "checkpoints").exists() for i in range(2))


def test_export_hf_from_two_processes_writes_once_and_matches_one_process(
    work: Path, resumed: dict
) -> None:
    """export-hf as 2 processes: only process 0 writes (process 1 is given another out path,
    which must stay absent), and the files are byte-identical to a 1-process export of the
    same checkpoint (whose loading in transformers tests/model covers)."""
    ck = str(resumed["dir"])
    launch_cli(
        ["export-hf", ck],
        cwd=work,
        per_process_args=[[str(work / "hf2")], [str(work / "hf2-p1")]],
    )
    assert not (work / "hf2-p1").exists()
    from jaxrepair.train.checkpoint import export_hf

    export_hf(ck, work / "hf1")  # the oracle: this (single) process exports the same checkpoint
    files = sorted(p.name for p in (work / "hf1").iterdir())
    assert files == sorted(p.name for p in (work / "hf2").iterdir())
    assert any(f.endswith(".safetensors") for f in files) and "tokenizer.json" in files
    for f in files:
        assert (work / "hf1" / f).read_bytes() == (work / "hf2" / f).read_bytes(), f

"""The validation cache: what the workspace hash sees, single computation per key across
processes (flock), infra errors never stored, corrupt entries rebuilt."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import pytest

from jaxrepair.envs.reward import ValidationResult
from jaxrepair.envs.validation_cache import ValidationCache, workspace_hash


class FakeSandbox:
    """Only the fingerprint matters for the cache key."""

    def __init__(self, image: str = "img-a"):
        self.image = image

    def fingerprint(self) -> dict:
        return {"backend": "test", "image": self.image}


def result(outcome: str, reward: float = 0.0) -> ValidationResult:
    return ValidationResult(
        outcome, reward, False, None, f"log {outcome}", 3, {"backend": "test"}, 0.1
    )


def test_workspace_hash_sees_what_a_build_depends_on(tmp_path):
    a = tmp_path / "a"
    (a / "src").mkdir(parents=True)
    (a / "src" / "m.c").write_text("int x;\n")
    (a / "run.sh").write_text("#!/bin/sh\n")
    b = tmp_path / "b"
    shutil.copytree(a, b, symlinks=True)
    h = workspace_hash(a)
    assert workspace_hash(b) == h
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    (b / ".pytest_cache").mkdir()
    assert workspace_hash(b) == h  # interpreter caches do not change the build
    changes = [
        lambda d: (d / "src" / "m.c").write_text("int y;\n"),
        lambda d: os.chmod(d / "run.sh", 0o755),
        lambda d: os.symlink("/etc/passwd", d / "link"),
        lambda d: (d / "empty").mkdir(),
        lambda d: (d / "src" / "m.o").write_bytes(b"\x7fELF"),  # objects can change `make`
        lambda d: (d / "src" / "m.c").rename(d / "src" / "n.c"),
    ]
    for i, change in enumerate(changes):
        c = tmp_path / f"c{i}"
        shutil.copytree(a, c, symlinks=True)
        change(c)
        assert workspace_hash(c) != h, i


def test_get_or_compute_hits_infra_and_corruption(c_tasks, tmp_path):
    task = c_tasks[0]
    ws = tmp_path / "ws"
    shutil.copytree(task.repo_dir, ws, symlinks=True)
    cache = ValidationCache(tmp_path / "cache")
    calls = []

    def compute(outcome):
        def f():
            calls.append(outcome)
            return result(outcome, 1.0 if outcome == "pass" else 0.0)

        return f

    # infra errors are never stored: the next caller computes again
    r, hit = cache.get_or_compute(task, ws, FakeSandbox(), compute("infra_error"))
    assert (r.outcome, hit) == ("infra_error", False) and cache.entries() == []
    r, hit = cache.get_or_compute(task, ws, FakeSandbox(), compute("pass"))
    assert (r.outcome, hit) == ("pass", False)
    r2, hit = cache.get_or_compute(task, ws, FakeSandbox(), compute("fail"))
    assert hit and r2 == r and calls == ["infra_error", "pass"]
    assert (cache.hits, cache.misses) == (1, 2)
    # another environment (image) is another key: never mixed
    _, hit = cache.get_or_compute(task, ws, FakeSandbox("img-b"), compute("fail"))
    assert not hit
    # another workspace content is another key
    (ws / "NEW").write_text("x")
    _, hit = cache.get_or_compute(task, ws, FakeSandbox(), compute("fail"))
    assert not hit
    # a corrupt entry is rebuilt, not returned
    for p in cache.root.glob("*.json"):
        p.write_text("{not json")
    r, hit = cache.get_or_compute(task, ws, FakeSandbox(), compute("pass"))
    assert not hit and r.outcome == "pass"


def _racer(cache_dir: str, task_dir: str, ws: str, counter: str, out: str) -> None:
    from jaxrepair.envs.task import load_task

    def compute() -> ValidationResult:
        with open(counter, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # a slow build: the others must wait for it, not run their own
        return result("pass", 1.0)

    r, hit = ValidationCache(Path(cache_dir)).get_or_compute(
        load_task(task_dir), Path(ws), FakeSandbox(), compute
    )
    Path(out).write_text(f"{r.outcome} {hit}")


def test_concurrent_identical_builds_run_once(c_tasks, tmp_path):
    task = c_tasks[0]
    ws = tmp_path / "ws"
    shutil.copytree(task.repo_dir, ws, symlinks=True)
    ctx = mp.get_context("spawn")
    counter = tmp_path / "computed"
    procs = [
        ctx.Process(
            target=_racer,
            args=(
                str(tmp_path / "cache"),
                str(task.root),
                str(ws),
                str(counter),
                str(tmp_path / f"out{i}"),
            ),
        )
        for i in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(counter.read_text().splitlines()) == 1
    outs = sorted((tmp_path / f"out{i}").read_text() for i in range(3))
    assert outs == ["pass False", "pass True", "pass True"]


def test_cache_server_claims_wait_and_die_with_their_owner(tmp_path):
    """The cluster cache's single-flight: the first caller of a key claims it and the others
    wait for its result; a claim whose owner died is dropped and a waiter takes it over at
    once (not after its wait limit); a stuck claim costs a duplicate build after the limit;
    infra errors are never stored. Oracle: the directory's files and the event order."""
    import asyncio

    from jaxrepair.envs.validation_cache import CacheServer

    server = CacheServer(tmp_path / "cache")
    ok = {"outcome": "pass", "reward": 1.0}

    async def run() -> None:
        assert await server.acquire("k", "a", 30.0) is None  # a builds k
        b = asyncio.ensure_future(server.acquire("k", "b", 30.0))
        c = asyncio.ensure_future(server.acquire("k", "c", 30.0))
        await asyncio.sleep(0.05)
        assert not b.done() and not c.done()  # waiting for a
        assert await server.release_owner("a") == 1  # a died mid-build
        t0 = time.monotonic()
        done, pending = await asyncio.wait({b, c}, return_when=asyncio.FIRST_COMPLETED)
        assert time.monotonic() - t0 < 5.0  # woken by the release, not by the wait limit
        # one of them now builds k, the other waits for its result
        (first,), (second,) = done, pending
        assert first.result() is None
        winner = "b" if first is b else "c"
        assert server._claims["k"] == winner and not second.done()
        await server.put("k", winner, ok)
        assert await second == ok
        assert await server.acquire("k", "d", 30.0) == ok
        # a stuck holder: the waiter builds too after its limit
        assert await server.acquire("s", "x", 30.0) is None
        t0 = time.monotonic()
        assert await server.acquire("s", "y", 0.2) is None
        assert time.monotonic() - t0 >= 0.2
        await server.put("s", "y", {"outcome": "infra_error"})
        assert await server.acquire("s", "z", 0.2) is None  # not stored: z builds it

    asyncio.run(run())
    assert [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*.json")] == [ok]
    stats = asyncio.run(server.stats())
    assert stats["hits"] == 2 and stats["claims"] == 1  # z's claim is still open


def test_cache_needs_one_place():
    with pytest.raises(ValueError, match="exactly one of root"):
        ValidationCache()

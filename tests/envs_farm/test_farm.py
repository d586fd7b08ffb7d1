"""The environment farm with real workers and real sandboxed builds (bubblewrap) on bundled
corpus tasks, driven by the expert policy or scripted text. The tests of the `EnvService`
contract (every episode ends exactly once, accounting, faults and retries, abandon and
truncate, backpressure, the validation cache) run on both backends (`backend`: spawned
processes, and Ray actors on a local Ray cluster); the process farm's own cleanup and
constructor checks run on it alone.

Oracles: a plain in-process episode (no farm) for what a replayed step must show, the fault
log the workers write at the moment a fault fires (with the pids of the sandbox processes then
running), psutil's view of the process table, the builds' own timestamps, and the cache
directory on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from jaxrepair.envs import make_episode, reward
from jaxrepair.envs.expert import ExpertPolicy
from jaxrepair.envs.farm import EnvFarm
from jaxrepair.envs.faults import FaultPlan
from jaxrepair.envs.protocol import EnvService, Outcome, StepResult

from .conftest import Backend, alive, make_task, processes_under, wait_gone

SUBMIT = '<tool_call>\n{"name": "submit", "arguments": {}}\n</tool_call>'


def fault_log(d: Path) -> list[dict]:
    p = d / "faults.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.is_file() else []


async def drive(
    farm: EnvService, eid: str, task, pipeline: str, turns: list[str], log: dict
) -> StepResult:
    """Reset, then play the scripted turns until the episode ends; every result is logged."""
    res = await farm.reset(eid, task, pipeline)
    log[eid] = [res]
    turns = list(turns)
    while not res.done and turns:
        res = await farm.step(eid, turns.pop(0))
        log[eid].append(res)
    return res


def in_process_observations(task, turns: list[str], sandbox) -> list[str]:
    """The same script through a plain episode: what each step shows without any farm."""
    ep = make_episode(task, "full", sandbox=sandbox)
    ep.reset()
    out = []
    try:
        for t in turns:
            obs, _, done, _ = ep.step(t)
            out.append(obs)
            if done:
                break
    finally:
        ep.close()
    return out


def test_fault_injection_full_pipeline(backend: Backend, c_tasks, local_sandbox, tmp_path):
    """Kill mid-build, a build hanging past the step timeout, sandbox start failures: the run
    finishes, every episode is accounted for, infra errors are reported separately and not
    scored, and faults that are retried successfully (by replay, multi-turn) score normally."""
    names = ["kill", "hang", "startfail", "dead", "broken", "wrong", "clean", "abandoned"]
    # kill: worker killed while validate_and_build runs; hang: validate_and_build hangs (the
    # first build of that workspace state, so never a cache hit); startfail: no sandbox at
    # reset (no build there: fires at its end);
    # dead: worker killed on every attempt of step 1; broken: no sandbox can start in any
    # attempt of the final step; wrong: submits the broken repo (a real 0).
    tasks = dict(zip(names, c_tasks, strict=False))
    turns = {e: ExpertPolicy(t).full_turns() for e, t in tasks.items() if e != "abandoned"}
    turns["wrong"] = [SUBMIT]
    # the expert's script ends with validate_and_build, then submit
    kill_at = len(turns["kill"]) - 2
    hang_at, broken_at = len(turns["hang"]) - 2, len(turns["broken"]) - 1
    assert "validate_and_build" in turns["kill"][kill_at]
    assert "validate_and_build" in turns["hang"][hang_at]
    assert len(turns["dead"]) >= 3
    faults = FaultPlan(
        kill=frozenset({("kill", kill_at, 0), ("dead", 1, 0), ("dead", 1, 1)}),
        hang=frozenset({("hang", hang_at, 0)}),
        sandbox_fail=frozenset(
            {("startfail", -1, 0), ("broken", broken_at, 0), ("broken", broken_at, 1)}
        ),
        log_dir=str(tmp_path),
    )
    log: dict[str, list[StepResult]] = {}
    seen_workers: set[int] = set()
    cache_dir = tmp_path / "cache"  # on: killed/hung builds hold cache locks when they die
    farm = backend.farm(
        workers=2, max_attempts=2, step_timeout_s=8.0, faults=faults, cache_dir=cache_dir
    )
    with farm:
        seen_workers.update(farm.worker_pids())
        workdir = backend.workdir(farm)

        async def run() -> None:
            jobs = [drive(farm, e, t, "full", turns.get(e, []), log) for e, t in tasks.items()]
            await asyncio.gather(*jobs)
            farm.abandon("abandoned", "generation failed")

        asyncio.run(run())
        seen_workers.update(farm.worker_pids())
        acc = farm.accounting()
        met = farm.metrics()
    final = {e: rs[-1] for e, rs in log.items()}

    # accounting: everything that started ended as scored or infra_error
    assert acc["complete"], acc
    assert acc["started"] == 8 == acc["scored"] + acc["infra_error"]
    assert set(acc["infra_errors"]) == {"dead", "broken", "abandoned"}
    assert acc["scored"] == 5 and acc["passed"] == 4
    assert "abandoned: generation failed" in acc["infra_errors"]["abandoned"]
    # infra errors are not scores
    for e in ("dead", "broken"):
        assert final[e].done and final[e].outcome == Outcome.INFRA_ERROR and final[e].infra_error
        assert final[e].reward == 0.0 and final[e].attempts == 2
    assert "worker died" in final["dead"].infra_error
    assert all("injected sandbox start failure" in f for f in acc["failed_attempts"]["broken"])
    # retried faults that later succeed are scored normally
    for e in ("kill", "hang", "startfail", "clean"):
        assert final[e].outcome == "pass" and final[e].reward == 1.0, (e, final[e])
    assert final["wrong"].outcome == "fail" and final["wrong"].reward == 0.0
    assert log["startfail"][0].attempts == 2 and log["startfail"][0].info["messages"]
    assert log["kill"][kill_at + 1].attempts == 2 and log["hang"][hang_at + 1].attempts == 2
    fa = acc["failed_attempts"]
    assert "worker died" in fa["kill"][0] and "hung past the step timeout" in fa["hang"][0]
    assert "SandboxStartFailure" in fa["startfail"][0] and len(fa["broken"]) == 2
    # the replayed step shows what the same step shows without any farm or crash
    oracle = in_process_observations(tasks["kill"], turns["kill"], local_sandbox)
    replayed = log["kill"][kill_at + 1].observation
    assert replayed.splitlines()[0] == oracle[kill_at].splitlines()[0]
    assert replayed.startswith("build PASSED")
    # the driver's transcript data: messages at reset, tool results after each step
    assert log["clean"][0].info["messages"][0]["role"] == "system" and log["clean"][0].info["tools"]
    assert [m["role"] for m in log["clean"][1].info["new_messages"]] == ["tool"]
    assert met["worker_restarts"] >= 4 and met["retries"] >= 5 and met["replays"] >= 2

    cached = [json.loads(p.read_text())["outcome"] for p in cache_dir.glob("*.json")]
    assert cached and Outcome.INFRA_ERROR not in cached

    # every fault fired where intended, with the sandbox really running for kill and hang
    fired = fault_log(tmp_path)
    by_key = {(f["fault"], tuple(f["key"])): f for f in fired}
    assert by_key[("kill", ("kill", kill_at, 0))]["command"] == tasks["kill"].build[0]
    assert by_key[("kill", ("kill", kill_at, 0))]["sandbox_pids"]
    assert by_key[("hang", ("hang", hang_at, 0))]["sandbox_pids"]
    assert ("sandbox_fail", ("startfail", -1, 0)) in by_key

    # nothing leaked: workers, their sandboxes, the workspaces
    pids = set(seen_workers) | {f["worker_pid"] for f in fired}
    pids |= {p for f in fired for p in f["sandbox_pids"]}
    assert not wait_gone(pids)
    assert not processes_under(workdir)
    assert not backend.leftovers(workdir)


def test_orphaned_sandbox_processes_are_killed(private_cache, tmp_path):
    """Unisolated sandbox (no bubblewrap, builds in their own sessions): a worker killed
    mid-build leaves its build orphaned, and a hung worker leaves a running one; the farm
    must kill both (they are found by their working directory inside the worker's dir)."""
    task = make_task(tmp_path / "tasks", "slow", ["sleep 60"])
    faults = FaultPlan(
        kill=frozenset({("k", 0, 0)}), hang=frozenset({("h", 0, 0)}), log_dir=str(tmp_path)
    )
    farm = EnvFarm(
        workers=2,
        sandbox_opts={"unisolated": True},
        max_attempts=1,
        step_timeout_s=3.0,
        faults=faults,
    )
    log: dict[str, list[StepResult]] = {}
    with farm:
        workdir = farm.workdir

        async def run() -> None:
            await asyncio.gather(
                drive(farm, "k", task, "simplified", [""], log),
                drive(farm, "h", task, "simplified", [""], log),
            )

        asyncio.run(run())
        fired = {f["fault"]: f for f in fault_log(tmp_path)}
        # already gone before close(): the farm cleaned up when it replaced the workers
        orphans = fired["kill"]["sandbox_pids"] + fired["hang"]["sandbox_pids"]
        assert orphans and not [p for p in orphans if alive(p)]
        assert not [p for p in processes_under(workdir) if p not in farm.worker_pids()]
        acc = farm.accounting()
    assert acc["complete"] and acc["infra_error"] == 2 and acc["scored"] == 0
    assert (
        log["k"][-1].outcome == Outcome.INFRA_ERROR and log["h"][-1].outcome == Outcome.INFRA_ERROR
    )
    assert not processes_under(workdir) and not os.path.exists(workdir)


def test_identical_answers_built_once_and_infra_never_cached(
    backend: Backend, c_tasks, local_sandbox, tmp_path
):
    """A GRPO-style group in the simplified pipeline: three identical expert answers and one
    wrong answer. With the cache on, two builds run and two answers are cache hits, even when
    the first attempt of one answer hits a sandbox failure (infra errors are never cached);
    the results equal those of an uncached run."""
    task = c_tasks[0]
    reward.reference_test_count(task, local_sandbox)  # so the workers build only the answers
    good = ExpertPolicy(task).simplified_answer()
    answers = {"g0": good, "g1": good, "g2": good, "g3": "I am not sure what to change."}
    faults = FaultPlan(sandbox_fail=frozenset({("g1", 0, 0)}), log_dir=str(tmp_path))

    def run_group(cache_dir, plan):
        log: dict[str, list[StepResult]] = {}
        farm = backend.farm(workers=2, step_timeout_s=30.0, faults=plan, cache_dir=cache_dir)
        with farm:

            async def run() -> None:
                # g1 first: its failed attempt comes before anything is cached
                await drive(farm, "g1", task, "simplified", [answers["g1"]], log)
                others = [e for e in answers if e != "g1"]
                await asyncio.gather(
                    *(drive(farm, e, task, "simplified", [answers[e]], log) for e in others)
                )

            asyncio.run(run())
            return {e: rs[-1] for e, rs in log.items()}, farm.metrics(), farm.accounting()

    cache_dir = tmp_path / "cache"
    cached, met, acc = run_group(cache_dir, faults)
    assert acc["complete"] and acc["scored"] == 4 and acc["infra_error"] == 0
    assert met["builds"] == 2 and met["cache_hits"] == 2, met
    # g1's first attempt ended as infra_error; had it been cached, the retry would have hit it
    assert cached["g1"].attempts == 2 and cached["g1"].outcome == "pass"
    assert "injected sandbox start failure" in acc["failed_attempts"]["g1"][0]
    entries = [json.loads(p.read_text()) for p in cache_dir.glob("*.json")]
    assert sorted(e["outcome"] for e in entries) == ["fail", "pass"]

    fresh, met_off, _ = run_group(None, None)
    assert met_off["builds"] == 4 and met_off["cache_hits"] == 0
    for e in answers:
        a, b = cached[e].info["validation"], fresh[e].info["validation"]
        assert (cached[e].outcome, cached[e].reward) == (fresh[e].outcome, fresh[e].reward)
        assert (a["tests_ran"], a["guard"]) == (b["tests_ran"], b["guard"])
    assert [cached[e].reward for e in answers] == [1.0, 1.0, 1.0, 0.0]


def test_bad_inputs_and_unstartable_workers(c_tasks, private_cache, tmp_path):
    for kwargs, msg in [
        ({"workers": 0}, "workers"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"step_timeout_s": 0}, "step_timeout_s"),
        ({"sandbox_kind": "vm"}, "sandbox_kind"),
    ]:
        with pytest.raises(ValueError, match=msg):
            EnvFarm(**kwargs)
    task = c_tasks[0]
    with pytest.raises(RuntimeError, match="not started"):
        asyncio.run(EnvFarm().reset("x", task, "full"))

    # a worker that cannot make its sandbox: start fails loudly with its reason, no leftovers
    farm = EnvFarm(workers=1, sandbox_opts={"bwrap": str(tmp_path / "no-bwrap")})
    with pytest.raises(RuntimeError, match="bubblewrap"):
        farm.start()
    assert not os.path.exists(farm.workdir)


def test_misuse_abandon_and_truncate(backend: Backend, c_tasks, tmp_path):
    """Wrong calls raise at once; an episode abandoned while its step runs and one truncated
    by the caller each end exactly once, with their own outcome."""
    task = c_tasks[0]
    with backend.farm(workers=1, sandbox_opts={"unisolated": True}) as farm:

        async def misuse() -> None:
            with pytest.raises(ValueError, match="unknown pipeline"):
                await farm.reset("a", task, "oneshot")
            with pytest.raises(TypeError, match="Task"):
                await farm.reset("a", task.id, "full")
            with pytest.raises(KeyError, match="unknown episode"):
                await farm.step("nope", SUBMIT)
            first = await farm.reset("a", task, "full")
            assert not first.done and "build" in first.observation
            with pytest.raises(ValueError, match="already used"):
                await farm.reset("a", task, "full")
            end = await farm.step("a", SUBMIT)
            assert end.done and end.outcome == "fail"
            with pytest.raises(ValueError, match="already ended"):
                await farm.step("a", SUBMIT)
            # abandoned while its step runs: the step reports the recorded infra_error
            await farm.reset("b", slow, "simplified")
            pending = asyncio.ensure_future(farm.step("b", ""))
            await asyncio.sleep(0.3)
            farm.abandon("b", "the sampler crashed")
            res = await pending
            assert res.outcome == Outcome.INFRA_ERROR and "the sampler crashed" in res.infra_error
            # truncated by the driver (the policy ran out of context): its own outcome, not an
            # infra error, and no further steps
            await farm.reset("c", task, "full")
            farm.truncate("c", "max_seq_len")
            assert farm.outcome("c") == Outcome.TRUNCATED
            with pytest.raises(ValueError, match="already ended"):
                await farm.step("c", SUBMIT)
            with pytest.raises(KeyError, match="unknown episode"):
                farm.truncate("nope", "max_seq_len")

        slow = make_task(tmp_path / "tasks", "slow", ["sleep 1"])
        asyncio.run(misuse())
        acc = farm.accounting()
        assert acc["complete"] and acc["outcomes"] == {
            "fail": 1,
            Outcome.INFRA_ERROR: 1,
            Outcome.TRUNCATED: 1,
        }
        assert (acc["started"], acc["scored"], acc["truncated"], acc["infra_error"]) == (3, 1, 1, 1)
        assert farm.metrics()["episodes_done"] == 3


@pytest.mark.parametrize("workers,cap", [(2, None), (3, 2)], ids=["workers", "build-cap"])
def test_backpressure_queues_and_caps_builds(backend: Backend, workers, cap, tmp_path):
    """Six episodes on a farm with room for two builds at once (two workers; or, on Ray,
    three actors under max_concurrent_builds=2): the rest wait in the queue, no moment has
    three builds running, as the builds' own start/end timestamps show, the cap is reached,
    and every episode ends exactly once."""
    if cap is not None and backend.name != "ray":
        pytest.skip("max_concurrent_builds is the Ray farm's cluster-wide cap")
    log = tmp_path / "builds.log"
    build = (  # each build names itself (pid and start nanoseconds) on both of its lines
        f'b=$$.$(date +%N); echo "$b start $(date +%s.%N)" >> {log}; sleep 0.4; '
        f'echo "$b end $(date +%s.%N)" >> {log}'
    )
    task = make_task(tmp_path / "tasks", "timed", [build])
    kw = {} if cap is None else {"max_concurrent_builds": cap}
    results: dict[str, list[StepResult]] = {}
    with backend.farm(workers=workers, sandbox_opts={"unisolated": True}, **kw) as farm:

        async def run() -> None:
            await asyncio.gather(
                *(drive(farm, f"q{i}", task, "simplified", [""], results) for i in range(6))
            )

        asyncio.run(run())
        acc, met = farm.accounting(), farm.metrics()
    assert all(
        r[-1].done and r[-1].outcome in (Outcome.PASS, Outcome.FAIL) for r in results.values()
    )
    assert acc["complete"] and acc["started"] == acc["scored"] == 6 and acc["infra_error"] == 0
    assert met["max_queue_depth"] >= 4  # six resets, two places

    spans: dict[str, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        name, what, t = line.split()
        spans.setdefault(name, {})[what] = float(t)
    assert len(spans) >= 6 and all(len(s) == 2 for s in spans.values()), spans
    events = sorted(  # by time; at a tie an end (-1) comes before a start (+1)
        (t, +1 if what == "start" else -1) for s in spans.values() for what, t in s.items()
    )
    running, peak = 0, 0
    for _, d in events:
        running += d
        peak = max(peak, running)
    assert peak == 2, (peak, spans)


def _sandbox_containers_under(directory: str) -> list[str]:
    import docker

    client = docker.from_env()
    try:
        root = os.path.realpath(directory) + os.sep
        return [
            c.id
            for c in client.containers.list(all=True, filters={"label": "jaxrepair.sandbox"})
            if any(str(m.get("Source", "")).startswith(root) for m in c.attrs.get("Mounts") or [])
        ]
    finally:
        client.close()


@pytest.mark.docker
def test_docker_backend_kill_and_hang(c_tasks, tmp_path):
    """The same faults on the Docker backend: containers belong to dockerd, not to the worker,
    so the farm must remove a dead worker's containers itself."""
    from jaxrepair.envs.sandbox import SandboxUnavailable, make_sandbox
    from jaxrepair.envs.sandbox.images import image_exists, image_for

    task = c_tasks[0]
    try:
        make_sandbox("docker")
    except SandboxUnavailable as e:
        pytest.skip(f"docker backend unavailable: {e}")
    image = task.image or image_for(task.build_system)
    if not image_exists(image):
        pytest.skip(f"sandbox image {image} missing: run `bash .ci/docker_up.sh`")
    good = ExpertPolicy(task).simplified_answer()
    faults = FaultPlan(
        kill=frozenset({("k", 0, 0)}), hang=frozenset({("h", 0, 0)}), log_dir=str(tmp_path)
    )
    log: dict[str, list[StepResult]] = {}
    with EnvFarm(workers=2, sandbox_kind="docker", step_timeout_s=20.0, faults=faults) as farm:
        workdir = farm.workdir

        async def run() -> None:
            await asyncio.gather(
                *(drive(farm, e, task, "simplified", [good], log) for e in ("k", "h", "ok"))
            )

        asyncio.run(run())
        assert not _sandbox_containers_under(workdir)  # the hung `sleep 3600` container too
        acc = farm.accounting()
    assert acc["complete"] and acc["passed"] == 3 and acc["infra_error"] == 0
    assert log["k"][-1].attempts == 2 and log["h"][-1].attempts == 2
    assert not _sandbox_containers_under(workdir) and not os.path.exists(workdir)

"""The environment contract: the process farm and the test fake both implement `EnvService`,
outcomes keep their plain-string form, and every accounting is one `EpisodeTally`.

The real reset/step path through `EnvFarm` is exercised by test_farm.py and
tests/train/test_rollout.py; these checks are about the contract itself and take well under
a second.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import pickle
import random
from collections import Counter
from pathlib import Path

import pytest

from jaxrepair.envs.farm import EnvFarm
from jaxrepair.envs.protocol import EnvService, EpisodeTally, Outcome, StepResult
from jaxrepair.train.collector import merge_accounting
from tests.train.test_rollout import FakeFarm, FakeTask

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("reset", "step", "truncate", "abandon", "outcome", "accounting", "metrics")


def _ray_farm():
    ray_farm = pytest.importorskip("jaxrepair.envs.ray_farm", reason="ray is not installed")
    return ray_farm.RayFarm(workers=1)


@pytest.mark.parametrize(
    "make", [lambda: EnvFarm(workers=1), _ray_farm, FakeFarm], ids=["EnvFarm", "RayFarm", "fake"]
)
def test_backends_implement_the_protocol(make):
    farm = make()
    assert isinstance(farm, EnvService)
    for name in METHODS:
        want = inspect.signature(getattr(EnvService, name))
        impl = getattr(farm, name)
        # every call the protocol allows binds to the implementation (self excluded)
        args = [p.name for p in want.parameters.values() if p.name != "self"]
        inspect.signature(impl).bind(*args)
        assert inspect.iscoroutinefunction(impl) == (name in ("reset", "step")), name


def test_a_backend_missing_a_method_is_not_a_service():
    class NoTruncate(FakeFarm):
        truncate = None  # type: ignore[assignment]

    class Bare:
        async def reset(self, episode_id, task, pipeline): ...

    assert not isinstance(Bare(), EnvService)
    assert not isinstance(NoTruncate(), EnvService)


def test_outcomes_keep_their_strings():
    for o in Outcome:
        assert o == o.value and hash(o) == hash(o.value) and f"{o}" == o.value
        assert json.loads(json.dumps({o: o})) == {o.value: o.value}
        assert pickle.loads(pickle.dumps(o)) is o
        assert Outcome(o.value) is o
    assert [o for o in Outcome if o.scored] == [Outcome.PASS, Outcome.FAIL]
    with pytest.raises(ValueError, match="'scored'"):
        EpisodeTally().record("scored")


def test_tally_counts_like_the_records():
    """A tally built outcome by outcome equals counting the records directly, and tallies of
    parts add up to the tally of the whole (the multi-process merge)."""
    rng = random.Random(0)
    records = [rng.choice([*Outcome, None]) for _ in range(200)]  # None: still in flight
    parts = [records[i::3] for i in range(3)]

    def tally(recs):
        t = EpisodeTally(started=len(recs))
        for r in recs:
            if r is None:
                t.in_flight += 1
            else:
                t.record(r)
        return t

    c = Counter(records)
    whole = tally(records)
    assert whole.to_dict() == {
        "started": 200,
        "scored": c[Outcome.PASS] + c[Outcome.FAIL],
        "passed": c[Outcome.PASS],
        "truncated": c[Outcome.TRUNCATED],
        "infra_error": c[Outcome.INFRA_ERROR],
        "in_flight": c[None],
        "complete": False,
    }
    assert EpisodeTally.total(tally(p) for p in parts) == whole
    merged = merge_accounting([{**tally(p).to_dict(), "outcomes": {"x": 1}} for p in parts])
    assert EpisodeTally.from_dict(merged) == whole and not merged["complete"]
    done = [r for r in records if r is not None]
    assert tally(done).complete
    # one part incomplete on its own terms makes the merge incomplete
    ok = tally(done).to_dict()
    assert not merge_accounting([ok, {**ok, "complete": False}])["complete"]


def test_fake_accounting_follows_the_protocol_calls():
    farm = FakeFarm(turns=2, fail_step=("e2",))

    async def run():
        for i in range(4):
            assert isinstance(await farm.reset(f"e{i}", FakeTask("t"), "simplified"), StepResult)
        assert (await farm.step("e0", "fix")).done is False
        res = await farm.step("e2", "fix")
        assert res.done and res.failed
        farm.truncate("e0", "max_seq_len")
        farm.abandon("e1", "generation failed")

    asyncio.run(run())
    assert [farm.outcome(f"e{i}") for i in range(4)] == [
        Outcome.TRUNCATED,
        Outcome.INFRA_ERROR,
        Outcome.INFRA_ERROR,
        None,
    ]
    acct = farm.accounting()
    assert acct["in_flight"] == 1 and not acct["complete"]
    farm.truncate("e3", "max_turns")
    assert farm.accounting() == EpisodeTally(started=4, truncated=2, infra_error=2).to_dict()


def test_driver_uses_only_the_protocol():
    """The collector neither probes its farm nor spells outcomes as strings."""
    src = (ROOT / "jaxrepair" / "train" / "collector.py").read_text()
    tree = ast.parse(src)
    probes = [
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id in ("hasattr", "getattr")
    ]
    assert probes == []
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert not strings & {o.value for o in Outcome}

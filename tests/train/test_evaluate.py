"""Evaluation summaries: avg@k and pass@k over sampled episodes, per category, with infra
errors excluded from the denominators. The oracle is a direct count over the fake farm's
recorded answers (which answer each episode got is decided by a seeded RNG, not by us)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from jaxrepair.train.evaluate import evaluate
from jaxrepair.train.rollout import SamplingSettings

from .test_rollout import FakeFarm, scripted_generate


@dataclasses.dataclass(frozen=True)
class CatTask:
    id: str
    category: str
    build_system: str = "python"
    split: str = "test"


def test_sampled_evaluation_reports_avg_and_pass_at_k(tok):
    tasks = [CatTask(f"t{i}", "config" if i % 2 else "import") for i in range(5)]
    farm = FakeFarm(turns=1, fail_step=("-t4",))  # every episode of t4 ends as infra_error
    rng = random.Random(3)
    calls: list[int] = []
    res = evaluate(
        None,
        None,
        tok,
        tasks,
        farm,
        pipelines=("simplified",),
        sampling=SamplingSettings(max_new_tokens=16, temperature=0.7),
        max_seq_len=4096,
        samples=4,
        generate_fn=scripted_generate(tok, lambda p: rng.choice(["fix", "no"]), calls),
    )["simplified"]
    # oracle: the farm's own record of what each episode answered
    answers: dict[str, list[bool]] = {}
    for eid, texts in farm.texts.items():
        if farm.eps[eid]["outcome"] in ("pass", "fail"):
            task = eid.rsplit("-", 1)[1]  # episode ids end with the task id
            answers.setdefault(task, []).append("fix" in texts[-1])
    flat = [a for v in answers.values() for a in v]
    assert res["episodes"] == 20 and res["infra_errors"] == 4 and res["scored"] == 16
    assert res["tasks"] == 4 and res["samples_per_task"] == 4
    assert res["success_rate"] == pytest.approx(sum(flat) / len(flat))
    assert res["tasks_solved_rate"] == pytest.approx(
        sum(any(v) for v in answers.values()) / len(answers)
    )
    cfg_ans = [a for t, v in answers.items() if int(t[1:]) % 2 for a in v]
    assert res["by_category"]["config"]["success_rate"] == pytest.approx(
        sum(cfg_ans) / len(cfg_ans)
    )
    assert sum(calls) == 20
    assert res["per_task"] == {t: pytest.approx(sum(v) / len(v)) for t, v in answers.items()}


def test_evaluate_rejects_bad_sampling(tok):
    with pytest.raises(ValueError, match="samples must be"):
        evaluate(None, None, tok, [CatTask("a", "c")], FakeFarm(), samples=0)
    with pytest.raises(ValueError, match="temperature 0"):
        evaluate(None, None, tok, [CatTask("a", "c")], FakeFarm(), samples=2)


@pytest.fixture(scope="module")
def tok():
    from jaxrepair.envs.tokenizer import load_tokenizer

    return load_tokenizer("tiny")

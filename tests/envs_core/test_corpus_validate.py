"""Corpus validation: broken fails and fixed passes, repeated, in parallel, with a summary."""

from __future__ import annotations

from jaxrepair.envs.corpus_validate import TaskReport, validate_corpus
from jaxrepair.envs.task import load_task

from .conftest import FIXTURES, make_task


def test_validate_corpus_reports_good_and_bad_tasks(tasks, tmp_path, capsys):
    bad = load_task(make_task(tmp_path, "never_fixed", {"a.txt": "x\n"}, ["false"], fix=""))
    passes_unfixed = load_task(make_task(tmp_path, "already_ok", {"a.txt": "x\n"}, ["true"]))
    report = validate_corpus(
        [*tasks.values(), bad, passes_unfixed], "local", repeats=2, workers=2, progress=False
    )
    by_id = {t.id: t for t in report.tasks}
    for tid in tasks:
        assert by_id[tid].ok and not by_id[tid].flaky, by_id[tid].problems
        assert by_id[tid].broken == ["fail", "fail"] and by_id[tid].fixed == ["pass", "pass"]
    assert not by_id["never_fixed"].ok and "reference fix" in by_id["never_fixed"].problems[0]
    assert not by_id["already_ok"].ok and "broken repo: pass" in by_id["already_ok"].problems[0]
    assert not report.ok and {t.id for t in report.failures()} == {"never_fixed", "already_ok"}
    rows = {(r["category"], r["build_system"]): r for r in report.summary()}
    assert rows[("dependency", "python")] == {**rows[("dependency", "python")], "count": 1, "ok": 1}
    assert rows[("test", "make")]["count"] == 2 and rows[("test", "make")]["ok"] == 0
    assert all(r["median_s"] > 0 for r in rows.values())
    out = capsys.readouterr().out
    assert "corpus validation" in out and "dependency" in out
    d = report.to_dict()
    assert d["ok"] is False and len(d["tasks"]) == 5 and d["tasks"][0]["median_s"] > 0


def test_sample_and_flaky_detection(tasks):
    report = validate_corpus(
        list(tasks.values()),
        "local",
        repeats=1,
        workers=1,
        sample=1,
        progress=False,
        print_summary=False,
    )
    assert len(report.tasks) == 1 and report.repeats == 1
    flaky = TaskReport(
        "t",
        "test",
        "make",
        "train",
        broken=["fail", "pass"],
        fixed=["pass", "pass"],
        fixed_guards=[None, None],
    )
    assert flaky.flaky and not flaky.ok
    infra = TaskReport(
        "t",
        "test",
        "make",
        "train",
        broken=["fail", "infra_error"],
        fixed=["pass"],
        fixed_guards=[None],
    )
    assert infra.infra and not infra.flaky and not infra.ok


def test_fixtures_exist():
    assert (FIXTURES / "packages/greetlib/1.0.0/pyproject.toml").is_file()

"""The manifest: records round-trip, materialise into the Task every other part reads (the
snapshot plus the break patch; the fix patch gives back the snapshot exactly), load_tasks
dispatches on it, the corpus version reaches the fingerprint, and bad records are refused
with one line naming the task and the field."""

from __future__ import annotations

import json
import shutil

import pytest

from jaxrepair.corpus.manifest import (
    Record,
    corpus_version,
    materialise,
    read_manifest,
    write_manifest,
)
from jaxrepair.corpus.python_breakages import breakages
from jaxrepair.corpus.snapshots import snapshot
from jaxrepair.corpus.sources import fetch
from jaxrepair.envs import deps
from jaxrepair.envs.reward import apply_patch, fingerprint
from jaxrepair.envs.task import TaskError, load_tasks

from .conftest import TESTS, read_tree


def _records(project, n: int = 2) -> list[Record]:
    tree, th = snapshot(fetch(project.source))
    files = {"minicalc/core.py": (tree / "minicalc/core.py").read_text()}
    cands = breakages(files, TESTS, seed=0)
    picks = [cands["logic"][0], cands["import"][0], cands["syntax"][0]][:n]
    return [
        Record(
            id=f"minicalc-1.0.0-{b.category}-{i}",
            project="minicalc",
            version="1.0.0",
            source=project.source,
            tree_sha256=th,
            build_system="python",
            category=b.category,
            kind=b.kind,
            build=project.build,
            timeout_s=60.0,
            protected=("tests/**", "setup.cfg"),
            relevant_files=(b.path,),
            issue="The build fails.",
            break_patch=b.break_patch,
            fix_patch=b.fix_patch,
            split="test",
            tests_ran=3,
        )
        for i, b in enumerate(picks)
    ]


def test_records_round_trip_and_materialise_into_tasks(tmp_path, project):
    recs = _records(project)
    path = tmp_path / "m.jsonl"
    write_manifest(path, recs)
    assert read_manifest(path) == sorted(recs, key=lambda r: r.id)
    snap, _ = snapshot(fetch(project.source))
    clean = read_tree(snap)
    for r in recs:
        task = materialise(r, tmp_path / "tasks")
        assert (task.id, task.category, task.split, task.build) == (
            r.id,
            r.category,
            "test",
            r.build,
        )
        assert task.protected == r.protected and task.fix_patch == r.fix_patch
        broken = read_tree(task.repo_dir)
        assert broken != clean
        assert {k for k in broken if broken[k] != clean.get(k)} == {"minicalc/core.py"}
        ws = tmp_path / "ws" / r.id
        shutil.copytree(task.repo_dir, ws)
        apply_patch(ws, task.fix_patch)
        assert read_tree(ws) == clean  # the fix gives back the upstream tree, byte for byte
        assert materialise(r, tmp_path / "tasks").root == task.root  # made once


def test_load_tasks_reads_a_manifest_and_the_version_reaches_the_fingerprint(
    tmp_path, project, local_sandbox
):
    recs = _records(project, 3)
    path = tmp_path / "corpus.jsonl"
    write_manifest(path, recs)
    tasks = load_tasks(path)
    assert sorted(t.id for t in tasks) == sorted(r.id for r in recs)
    version = corpus_version(recs)
    assert all(t.root.parent == deps.cache_dir() / "corpus" / "tasks" / version for t in tasks)
    assert fingerprint(tasks[0], local_sandbox, {})["corpus_version"] == version
    # any change to any record is a new corpus version, so every fingerprint changes
    edited = [recs[0].__class__(**{**recs[0].__dict__, "issue": "other"}), *recs[1:]]
    assert corpus_version(edited) != version
    assert corpus_version(list(reversed(recs))) == version


def _line(project) -> dict:
    return _records(project, 1)[0].to_dict()


@pytest.mark.parametrize(
    ("change", "field", "match"),
    [
        (lambda d: d.pop("id"), "id", "missing"),
        (lambda d: d.update(schema="jaxrepair.corpus/9"), "schema", "is not"),
        (lambda d: d.update(category="typo"), "category", "is not one of"),
        (lambda d: d.update(build=[]), "build", "at least one"),
        (lambda d: d.update(fix_patch="oops"), "fix_patch", "unified diff"),
        (lambda d: d["source"].update(hash="sha256:xyz"), "source", "is not 'sha256:<hex>'"),
        (lambda d: d.update(pins={"a": 1}), "pins", "exact pins"),
        (lambda d: d.update(timeout_s=-1), "timeout_s", "positive"),
    ],
)
def test_bad_records_are_refused_naming_the_field(tmp_path, project, change, field, match):
    d = _line(project)
    change(d)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(d) + "\n")
    with pytest.raises(TaskError, match=match) as e:
        read_manifest(path)
    assert e.value.field == field and "\n" not in str(e.value)


def test_manifest_file_errors(tmp_path, project):
    good = json.dumps(_line(project))
    path = tmp_path / "m.jsonl"
    path.write_text(good + "\n{not json\n")
    with pytest.raises(TaskError, match=r"m.jsonl:2.*not valid JSON"):
        read_manifest(path)
    path.write_text(good + "\n" + good + "\n")
    with pytest.raises(TaskError, match="duplicate id"):
        read_manifest(path)
    d = _line(project)
    d["break_patch"] = d["break_patch"].replace("return", "retrun")
    path.write_text(json.dumps(d) + "\n")
    with pytest.raises(TaskError, match="does not apply") as e:
        load_tasks(path)
    assert e.value.field == "break_patch"
    d = _line(project)
    d["tree_sha256"] = "0" * 64
    path.write_text(json.dumps(d) + "\n")
    with pytest.raises(TaskError, match="hashes to") as e:
        load_tasks(path)
    assert e.value.field == "tree_sha256"


def test_a_swebench_jsonl_still_loads_as_swebench(tmp_path):
    path = tmp_path / "swe.jsonl"
    rec = {"instance_id": "a__b-1", "repo": "a/b", "base_commit": "c", "patch": "p"}
    path.write_text(json.dumps({**rec, "test_patch": "t", "FAIL_TO_PASS": ["x"]}) + "\n")
    with pytest.raises(TaskError, match="SWE-bench tasks run only in their Docker image"):
        load_tasks(path)


def test_record_split_holds_out_breakages_of_train_projects_only():
    """Three splits: a held-out project's tasks are all "test"; a train project's are
    "train" or, about one in IN_DISTRIBUTION_EVERY by the break patch's hash, "test_id"."""
    import hashlib

    from jaxrepair.corpus.manifest import IN_DISTRIBUTION_EVERY, record_split

    patches = [f"--- a/x.py\n+++ b/x.py\n@@ -{i} +{i} @@\n-a\n+b{i}\n" for i in range(500)]
    assert {record_split("test", p) for p in patches} == {"test"}
    got = [record_split("train", p) for p in patches]
    assert got == [record_split("train", p) for p in patches]  # decided by the patch alone
    want = [
        "test_id"
        if int(hashlib.sha256(p.encode()).hexdigest()[:8], 16) % IN_DISTRIBUTION_EVERY == 0
        else "train"
        for p in patches
    ]
    assert got == want
    assert 0.1 < got.count("test_id") / len(got) < 0.3

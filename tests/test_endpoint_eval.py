"""`evaluate_endpoint`: real episodes (local sandbox, real builds) played by a real HTTP
chat-completions server on loopback. Oracle: the expert's reference answers score 1 and a
model that only apologises scores 0, through the same pipelines and guards."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jaxrepair.collect import bundled_corpus
from jaxrepair.endpoint_eval import evaluate_endpoint
from jaxrepair.envs import load_tasks
from jaxrepair.envs.expert import ExpertPolicy
from jaxrepair.envs.teacher import TeacherClient
from jaxrepair.train.eval_report import write_report

TASKS = ("recipes-config-002", "ledger-config-002")


@pytest.fixture(scope="module")
def tasks():
    by_id = {t.id: t for t in load_tasks(bundled_corpus())}
    return [by_id[t] for t in TASKS]


@pytest.fixture(scope="module")
def server(tasks):
    """/v1/chat/completions: model "expert" answers each task's reference fix, "sorry" does
    not try."""
    answers = {t.id: ExpertPolicy(t).simplified_answer() for t in tasks}
    issues = {t.id: t.issue.strip()[:200] for t in tasks}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = " ".join(str(m.get("content") or "") for m in body["messages"])
            task = next(t for t, issue in issues.items() if issue in text)
            reply = answers[task] if body["model"] == "expert" else "Sorry, I cannot help."
            out = json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": reply}}]}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_an_endpoint_is_evaluated_like_a_checkpoint(server, tasks, tmp_path):
    runs = {}
    for model in ("expert", "sorry"):
        client = TeacherClient(base_url=server, model=model, retries=0)
        runs[model] = evaluate_endpoint(
            client, tasks, ("simplified",), workers=2, echo=lambda line: None
        )
    expert, sorry = runs["expert"]["simplified"], runs["sorry"]["simplified"]
    assert sorted(r["task_id"] for r in expert) == sorted(TASKS)
    assert all(r["valid"] and r["reward"] == 1.0 and not r["tampered"] for r in expert)
    assert all(r["valid"] and r["reward"] == 0.0 for r in sorry)
    assert {r["category"] for r in expert} == {t.category for t in tasks}
    report = write_report(tmp_path / "eval", runs)
    text = report.read_text()
    assert "| expert | simplified | 2 | 2 | 100.0% [" in text
    assert "| sorry | simplified | 2 | 2 | 0.0% [" in text


def test_an_unreachable_endpoint_ends_episodes_as_infra_errors(tasks):
    client = TeacherClient(base_url="http://127.0.0.1:9/v1", model="x", retries=0, timeout_s=2)
    got = evaluate_endpoint(client, tasks[:1], ("simplified",), echo=lambda line: None)
    (rec,) = got["simplified"]
    assert not rec["valid"] and rec["outcome"] == "infra_error" and "endpoint" in rec["end_reason"]


def test_run_eval_of_an_endpoint_alone_writes_the_record_and_report(server, tmp_path):
    """`jaxrepair eval CONFIG --endpoint URL` without a checkpoint: only the endpoint is
    evaluated (no random weights), on the config's corpus, and reported."""
    import shutil

    from jaxrepair.config import load_config
    from jaxrepair.train.evaluate import EvalOptions, run_eval

    corpus = tmp_path / "corpus"
    for tid in TASKS:  # both as test-split tasks
        shutil.copytree(bundled_corpus() / tid, corpus / tid)
        toml = corpus / tid / "task.toml"
        toml.write_text(toml.read_text().replace('split = "train"', 'split = "test"'))
    cfg = load_config(
        None, [f"train.out_dir={tmp_path / 'run'}", f"envs.corpus={corpus}", "envs.workers=2"]
    )
    client = TeacherClient(base_url=server, model="expert", retries=0)
    rec = run_eval(cfg, EvalOptions(pipelines=("simplified",), endpoint=client))
    assert list(rec["models"]) == ["endpoint:expert"] and not rec["random_init"]
    res = rec["results"]["simplified"]
    assert sorted(rec["tasks"]["ids"]) == sorted(TASKS)
    assert res["episodes"] == 2 and res["per_task"] == {t: 1.0 for t in TASKS}
    report = (tmp_path / "run" / "eval" / "report.md").read_text()
    assert "| endpoint:expert | simplified | 2 | 2 | 100.0% [" in report


def test_run_eval_evaluates_the_chosen_split_only(server, tmp_path):
    """`--split test_id` evaluates the in-distribution held-out tasks and nothing else."""
    import shutil

    import pytest

    from jaxrepair.config import load_config
    from jaxrepair.train.evaluate import EvalOptions, run_eval

    corpus = tmp_path / "corpus"
    for tid, split in zip(TASKS, ("test", "test_id"), strict=True):
        shutil.copytree(bundled_corpus() / tid, corpus / tid)
        toml = corpus / tid / "task.toml"
        toml.write_text(toml.read_text().replace('split = "train"', f'split = "{split}"'))
    cfg = load_config(
        None, [f"train.out_dir={tmp_path / 'run'}", f"envs.corpus={corpus}", "envs.workers=1"]
    )
    client = TeacherClient(base_url=server, model="expert", retries=0)
    rec = run_eval(cfg, EvalOptions(split="test_id", pipelines=("simplified",), endpoint=client))
    assert rec["tasks"]["ids"] == [TASKS[1]]
    with pytest.raises(ValueError, match="--split 'dev'"):
        EvalOptions(split="dev")

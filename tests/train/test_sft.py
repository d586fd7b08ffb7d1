"""SFT: packing (shift within documents, first fit, long documents split), the loader position, the
train step (accumulation, bf16 compute, sharded == single device), and loss going down 10x."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrepair.model import Qwen3Config, init_params, make_mesh
from jaxrepair.train.sft import (
    PackedLoader,
    encode_trajectories,
    load_trajectories,
    pack_documents,
    run_sft,
    sft_loss_fn,
)
from jaxrepair.train.trainer import Trainer, lr_schedule, single_device_mesh
from tests.train.trajectories import make_tokenizer, write_trajectories


def _doc(start: int, n: int, masked_from: int):
    ids = list(range(start, start + n))
    return ids, [0] * masked_from + [1] * (n - masked_from)


# ----------------------------------------------------------------------------- packing
def test_packing_shifts_within_documents_and_first_fit(caplog):
    docs = [_doc(100, 6, 2), _doc(200, 9, 4), _doc(300, 3, 1), _doc(400, 14, 3), _doc(500, 5, 0)]
    with caplog.at_level(logging.WARNING, logger="jaxrepair.train.sft"):
        rows = pack_documents(docs, seq_len=10, pad_id=7)
    # shifted lengths 5, 8, 2, 13, 4; 13 > seq_len is split end-aligned into pieces of 3 and
    # 10 positions. First fit over pieces 5, 8, 2, 3, 10, 4 -> rows [5+2+3], [8], [10], [4]
    assert rows.stats["split"] == 1 and rows.stats["pieces"] == 6
    assert rows.stats["pieces_unmasked"] == 0
    assert "split into pieces" in caplog.text
    seg = rows.segment_ids
    assert len(rows) == 4
    np.testing.assert_array_equal(seg[0], [1] * 5 + [2] * 2 + [3] * 3)
    np.testing.assert_array_equal(seg[1], [1] * 8 + [0] * 2)
    np.testing.assert_array_equal(seg[2], [1] * 10)
    np.testing.assert_array_equal(seg[3], [1] * 4 + [0] * 6)
    # inputs/targets: next token of the same document only
    np.testing.assert_array_equal(rows.tokens[0, :7], [100, 101, 102, 103, 104, 300, 301])
    np.testing.assert_array_equal(rows.targets[0, :7], [101, 102, 103, 104, 105, 301, 302])
    assert rows.targets[0, 4] != 300  # the last token of doc 0 never predicts doc 2's first
    np.testing.assert_array_equal(rows.positions[0], [0, 1, 2, 3, 4, 0, 1, 0, 1, 2])
    # weights follow the target's mask; padding has weight 0 and the pad id
    np.testing.assert_array_equal(rows.loss_mask[0, :7], [0, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(rows.loss_mask[1, :8], [0, 0, 0, 1, 1, 1, 1, 1])
    assert (rows.loss_mask[seg == 0] == 0).all() and (rows.tokens[seg == 0] == 7).all()
    # the long document: its first piece, then its last seq_len positions, up to its last token
    np.testing.assert_array_equal(rows.tokens[0, 7:], [400, 401, 402])
    np.testing.assert_array_equal(rows.loss_mask[0, 7:], [0, 0, 1])
    np.testing.assert_array_equal(rows.targets[2], np.arange(404, 414))
    # every learned weight is a (token -> next token) pair of one document; none is lost
    for i, (_ids, mask) in enumerate(docs):
        assert (rows.loss_mask * (rows.tokens // 100 == i + 1)).sum() == sum(mask[1:])


def test_packing_drops_and_errors():
    rows = pack_documents([_doc(1, 1, 0), _doc(10, 4, 4), _doc(20, 4, 1)], seq_len=8)
    assert rows.stats["dropped_short"] == 1 and rows.stats["dropped_unmasked"] == 1
    assert len(rows) == 1
    with pytest.raises(ValueError, match="no trainable documents"):
        pack_documents([_doc(10, 4, 4)], seq_len=8)
    with pytest.raises(ValueError, match="differ in length"):
        pack_documents([([1, 2, 3], [1, 1])], seq_len=8)
    unpacked = pack_documents([_doc(1, 3, 1), _doc(10, 3, 1)], seq_len=8, packing=False)
    assert len(unpacked) == 2


def test_trajectory_jsonl_to_rows(tmp_path):
    path = write_trajectories(tmp_path / "t.jsonl", n=3)
    tok = make_tokenizer()
    trajs = load_trajectories(path)
    docs = encode_trajectories(trajs, tok)
    rows = pack_documents(docs, seq_len=1024, pad_id=tok.pad_id)
    assert rows.stats["documents"] == 3 and rows.stats["split"] == 0
    # the learned targets decode to exactly the assistant outputs, in order
    learned = rows.targets[rows.loss_mask > 0]
    text = tok.decode(learned.tolist())
    assert text.count("<|im_end|>") == 9  # 3 assistant turns per trajectory
    assert "<tool_call>" in text and "The build fails" not in text and "passed in" not in text
    assert "I will look at src/slugkit/__init__.py first." in text
    # a prompt loss weight: assistant targets keep weight 1, every other target gets w, and
    # the weighted loss is the numpy weighted mean of the per-token cross-entropies
    weighted = pack_documents(encode_trajectories(trajs, tok, prompt_weight=0.1), 1024, tok.pad_id)
    real = weighted.segment_ids > 0
    assert np.array_equal(weighted.targets, rows.targets)
    np.testing.assert_allclose(weighted.loss_mask[rows.loss_mask > 0], 1.0)
    np.testing.assert_allclose(weighted.loss_mask[real & (rows.loss_mask == 0)], 0.1)
    assert weighted.loss_mask[~real].sum() == 0  # padding never learns
    cfg = Qwen3Config.preset("tiny", vocab_size=tok.vocab_size)
    params = init_params(cfg, jax.random.key(0))
    batch = {k: jnp.asarray(v) for k, v in weighted.rows(slice(0, 1)).items()}
    loss, _ = sft_loss_fn(cfg, chunk=256)(params, batch, None)
    from jaxrepair.model import forward

    logits = np.asarray(
        forward(params, cfg, batch["tokens"], batch["positions"], batch["segment_ids"]),
        np.float64,
    )[0]
    m = logits.max(-1, keepdims=True)
    logz = np.log(np.exp(logits - m).sum(-1)) + m[:, 0]
    ce = logz - logits[np.arange(logits.shape[0]), weighted.targets[0]]
    w = weighted.loss_mask[0].astype(np.float64)
    np.testing.assert_allclose(float(loss), (ce * w).sum() / w.sum(), rtol=2e-5)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n{"no": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_trajectories(bad)


def test_loader_state_resumes_the_same_batches():
    rows = pack_documents([_doc(i * 10, 5, 1) for i in range(7)], seq_len=5)
    a = PackedLoader(rows, batch_size=3, seed=4)
    first = [a.next_batch()["tokens"] for _ in range(3)]
    state = a.state_dict()
    rest = [a.next_batch()["tokens"] for _ in range(4)]
    b = PackedLoader(rows, batch_size=3, seed=4)
    b.load_state_dict(json.loads(json.dumps(state)))
    for x, y in zip(rest, [b.next_batch()["tokens"] for _ in range(4)], strict=True):
        np.testing.assert_array_equal(x, y)
    # each epoch is a permutation of all rows
    seen = np.concatenate(first + rest[:1])[:7, 0]
    assert sorted(seen.tolist()) == [i * 10 for i in range(7)]
    with pytest.raises(ValueError, match="seed"):
        PackedLoader(rows, 3, seed=5).load_state_dict(state)


def test_lr_schedule_warmup_and_cosine():
    f = lr_schedule(1.0, total_steps=10, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    lrs = [float(f(s)) for s in range(11)]
    np.testing.assert_allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0], rtol=1e-6)
    np.testing.assert_allclose(lrs[4], 1.0, rtol=1e-6)
    np.testing.assert_allclose(lrs[7], 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.5)), rtol=1e-6)
    np.testing.assert_allclose(lrs[10], 0.1, rtol=1e-6)


# ----------------------------------------------------------------------------- train step
@pytest.fixture(scope="module")
def small():
    cfg = Qwen3Config.preset("tiny", vocab_size=128)
    rng = np.random.default_rng(0)
    docs = [(rng.integers(0, 128, 30).tolist(), [0] * 10 + [1] * 20) for _ in range(8)]
    rows = pack_documents(docs, seq_len=32)
    params = jax.tree.map(np.asarray, init_params(cfg, jax.random.key(0)))  # host copy, reused
    return cfg, rows, params


def _trainer(cfg, params, tmp_path, mesh=None, **kw):
    # plain SGD (lr 1) so parameter differences are gradient differences (Adam's first step,
    # ~lr * g/|g|, would blow float noise of near-zero gradients up to ~lr)
    return Trainer(
        cfg,
        params,  # host arrays: each Trainer gets (and donates) its own device copy
        sft_loss_fn(cfg, chunk=8),
        (optax.sgd(1.0), lambda step: jnp.ones((), jnp.float32)),
        mesh=mesh,
        out_dir=tmp_path,
        progress=False,
        tensorboard=False,
        **kw,
    )


def _leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(params)]


@pytest.mark.slow  # sharded SFT equality runs in tests/multiprocess; planner cases compile accum
def test_grad_accumulation_and_bf16_and_sharded_step(small, tmp_path):
    cfg, rows, params = small
    batch = rows.rows(np.arange(2))
    batch2 = {k: np.concatenate([v, v]) for k, v in batch.items()}  # two equal halves

    base = _trainer(cfg, params, tmp_path / "a")
    m = base.train_step(batch2)
    acc = _trainer(cfg, params, tmp_path / "b", accum_steps=2)
    m_acc = acc.train_step(batch2)
    np.testing.assert_allclose(float(m["loss"]), float(m_acc["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m["grad_norm"]), float(m_acc["grad_norm"]), rtol=1e-5)
    assert float(m_acc["num_loss_tokens"]) == float(m["num_loss_tokens"])  # summed
    for a, b in zip(_leaves(base.params), _leaves(acc.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)

    bf = _trainer(cfg, params, tmp_path / "c", compute_dtype=jnp.bfloat16)
    m_bf = bf.train_step(batch2)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf.params))  # fp32 master
    assert abs(float(m_bf["loss"]) - float(m["loss"])) < 0.05 * float(m["loss"])
    assert not np.array_equal(_leaves(bf.params)[0], _leaves(base.params)[0])

    if len(jax.devices()) >= 8:
        mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
        sh = _trainer(cfg, params, tmp_path / "e", mesh=mesh)
        m_sh = sh.train_step(batch2)
        assert sh.params["layers"]["q_proj"].sharding.spec != jax.sharding.PartitionSpec()
        np.testing.assert_allclose(float(m_sh["loss"]), float(m["loss"]), rtol=1e-5)
        for a, b in zip(_leaves(base.params), _leaves(sh.params), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
        with pytest.raises(ValueError, match="divide evenly"):
            _trainer(cfg, params, tmp_path / "f", mesh=mesh).train_step(rows.rows(np.arange(2)))


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize(
    "preset",
    ["tiny", pytest.param("tiny-moe", marks=pytest.mark.slow)],  # MoE: tests/model
)
def test_sft_drives_loss_down_tenfold(tmp_path, preset):
    from jaxrepair.config import load_config

    traj = write_trajectories(tmp_path / "traj.jsonl", n=8)
    cfg = load_config(
        None,
        [
            f"model.preset={preset}",
            f"data.train_paths={traj}",
            f"data.eval_paths={traj}",
            "data.seq_len=512",
            "data.batch_size=2",
            "optim.lr=1e-2",
            "optim.warmup_steps=5",
            "optim.min_lr_ratio=0.1",
            "train.steps=60",
            "train.log_every=1",
            f"train.out_dir={tmp_path / 'run'}",
            "train.checkpoint_every=0",
        ],
    )
    summary = run_sft(cfg, tokenizer=make_tokenizer(), mesh=single_device_mesh(), progress=False)
    rows = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    train_rows = [r for r in rows if "loss" in r]
    initial = train_rows[0]["loss"]  # loss of the first batch at the initial parameters
    final_eval = summary["eval"]["loss"]  # the whole trajectory set after training
    assert initial > 4.0  # ~ln(vocab) at random init
    print(f"SFT loss: initial {initial:.3f} -> final eval {final_eval:.4f}")
    assert final_eval < initial / 10, (initial, final_eval)
    assert summary["step"] == 60 and summary["tokens_per_s"] > 0
    assert {"loss", "grad_norm", "lr", "tokens_per_s"} <= set(train_rows[-1])
    assert list((tmp_path / "run" / "tb").iterdir())  # TensorBoard events written


def test_run_sft_bad_input_is_named(tmp_path):
    from jaxrepair.config import load_config

    with pytest.raises(ValueError, match="data.train_paths is empty"):
        run_sft(load_config(None, [f"train.out_dir={tmp_path}"]))
    missing = tmp_path / "nope.jsonl"
    cfg = load_config(None, [f"data.train_paths={missing}", f"train.out_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        run_sft(cfg, tokenizer=make_tokenizer())

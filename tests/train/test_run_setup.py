"""The run set-up every command shares (`jaxrepair.train.run_setup`): what a run is started
from, against the files a real run writes, and the farm every command builds."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepair.config import ConfigError, EngineSection, EnvsConfig, load_config
from jaxrepair.train.run_setup import (
    TrainingStart,
    corpus_tasks,
    make_farm,
    resolve_model,
    resolve_tokenizer,
    start_training,
    tokenizer_spec,
)
from jaxrepair.train.trainer import Trainer, single_device_mesh
from tests.train.trajectories import make_tokenizer


def test_a_run_started_from_an_sft_run_takes_its_tokenizer_and_weights(tmp_path, caplog):
    """An orbax source brings the tokenizer its weights were trained with (not "tiny"), its
    model config and its last step's params; a HF source its own config and weights."""
    from jaxrepair.model import save_hf
    from jaxrepair.train.checkpoint import load_params
    from jaxrepair.train.sft import sft_loss_fn

    tok = make_tokenizer()  # not the default "tiny": the oracle for "its own tokenizer"
    sft = tmp_path / "sft"
    sft_cfg = load_config(None, [f"train.out_dir={sft}", "train.steps=0"])

    def start_sft() -> tuple[TrainingStart, Trainer, bool]:
        start = start_training(sft_cfg, "sft", tokenizer=tok, mesh=single_device_mesh())
        trainer = start.trainer(sft_loss_fn(start.source.cfg), 1)
        return start, trainer, start.restore_or_init(trainer, None, lambda: trainer.step, "step")

    _, trainer, resumed = start_sft()  # a new run: random init, tokenizer saved
    trainer.save(None)
    trainer.close()
    assert not resumed
    _, again, resumed = start_sft()  # the same run again: resumed, with nothing left to do
    again.close()
    assert resumed and "already at step 0 of train.steps=0: nothing to train" in caplog.text

    after = load_config(None, [f"train.init_from={sft}", "model.remat=full"])
    assert tokenizer_spec(after) == str(sft / "checkpoints" / "tokenizer")
    loaded = resolve_tokenizer(after)
    assert loaded.vocab_size == tok.vocab_size != resolve_tokenizer(load_config(None)).vocab_size
    assert loaded.encode("pip install slugkit") == tok.encode("pip install slugkit")
    explicit = load_config(None, [f"train.init_from={sft}", "tokenizer.spec=tiny"])
    assert tokenizer_spec(explicit) == "tiny"  # an explicit spec wins

    source = resolve_model(after, loaded.vocab_size)
    want_cfg, want, step = load_params(sft)
    assert source.kind == "orbax" and source.path == str(sft / "checkpoints")
    assert source.cfg == want_cfg.replace(remat="full")  # the run's execution settings
    params, got_step = source.load(single_device_mesh(), jnp.dtype("bfloat16"), seed=0)
    assert got_step == step == 0
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want), strict=True):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b.astype(jnp.bfloat16)))

    hf = save_hf(tmp_path / "hf", want_cfg, want, dtype="float32")
    from_hf = load_config(None, [f"model.hf_dir={hf}"])
    assert tokenizer_spec(from_hf) == str(hf)  # the checkpoint's own (no tokenizer.spec)
    hf_source = resolve_model(from_hf, tok.vocab_size)
    assert hf_source.kind == "hf" and hf_source.cfg.vocab_size == want_cfg.vocab_size
    hf_params, hf_step = hf_source.load(single_device_mesh(), jnp.dtype("float32"), seed=0)
    assert hf_step is None
    for a, b in zip(jax.tree.leaves(hf_params), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="use the checkpoint's own tokenizer"):
        resolve_model(from_hf, want_cfg.vocab_size + 1)


def test_a_random_init_widens_a_preset_vocabulary_for_the_tokenizer(caplog):
    config = load_config(None, ["model.preset=tiny"])
    small = resolve_model(config, 10)
    assert small.kind == "random" and small.path is None
    wide = resolve_model(config, small.cfg.vocab_size + 1)
    assert wide.cfg.vocab_size % 128 == 0 and wide.cfg.vocab_size > small.cfg.vocab_size
    assert "random init with vocab_size" in caplog.text


def test_every_command_builds_its_farm_with_the_caps_and_the_run_cache(tmp_path):
    """One rule for sft/grpo/eval/demo: envs' episode caps always apply (only the full
    pipeline has caps) and identical workspaces are validated once per run directory."""
    config = load_config(None, ["envs.max_steps=5", "envs.max_context_tokens=999"])
    farm = make_farm(config.envs, tmp_path / "run")
    assert farm.episode_caps == {"max_steps": 5, "max_context_tokens": 999}
    assert farm.cache_dir == str(tmp_path / "run" / "validation_cache")
    assert make_farm(EnvsConfig(cache_validation=False), tmp_path).cache_dir is None
    assert make_farm(EnvsConfig(), "gs://bucket/run").cache_dir is None  # no file locks there


def test_corpus_splits_and_a_missing_split_is_named():
    test = corpus_tasks(EnvsConfig(), "test")
    every = corpus_tasks(EnvsConfig())
    assert test and {t.split for t in test} == {"test"}
    assert {t.id for t in test} == {t.id for t in every if t.split == "test"}
    with pytest.raises(ValueError, match="no holdout-split tasks in .*corpus"):
        corpus_tasks(EnvsConfig(), "holdout")


def test_the_engine_config_is_the_engine_section_plus_the_sequence_length():
    from jaxrepair.engine.jax_engine import EngineConfig

    section = load_config(None, ["engine.slots=3", "engine.num_blocks=24"]).engine
    made = EngineConfig.from_section(section, max_seq_len=64)
    assert isinstance(made, EngineSection) and made.max_seq_len == 64
    assert (made.slots, made.num_blocks, made.block_size) == (3, 24, section.block_size)
    with pytest.raises(ConfigError, match=r"engine\.prefill_chunk=100: must be a multiple of"):
        EngineConfig(prefill_chunk=100)  # the section's own check and message
    # reading a config never imports jax (the engine's section is defined without it)
    code = "import sys, jaxrepair.config; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_demo_configs_share_the_farm_settings_and_overrides_win(tmp_path):
    from jaxrepair.demo import QUICK, TRAJ_FULL, TRAJ_SIMPLE, demo_configs

    sft, grpo = demo_configs(QUICK, tmp_path, None, ["envs.workers=3"])
    assert sft.envs == grpo.envs and grpo.envs.workers == 3
    assert grpo.envs.max_steps == QUICK.full_max_steps
    assert grpo.train.init_from == str(tmp_path / "sft") and sft.train.init_from is None
    assert sft.data.train_paths == (str(tmp_path / TRAJ_SIMPLE), str(tmp_path / TRAJ_FULL))

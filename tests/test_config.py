"""Run configs: TOML files on disk, typed --set overrides, clear errors."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from jaxrepair.config import (
    ConfigError,
    GRPOConfig,
    RunConfig,
    load_config,
)
from jaxrepair.model.config import PRESETS, Qwen3Config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "launch" / "configs"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_defaults_load_and_are_frozen():
    cfg = load_config(None, [])
    assert cfg == RunConfig()
    assert cfg.model.preset == "tiny" and cfg.grpo.kl_beta == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.grpo.group_size = 3  # type: ignore[misc]
    # Every section and field is present in to_dict, each with its default.
    d = cfg.to_dict()
    sections = {"model", "mesh", "data", "optim", "train", "sft", "grpo", "envs", "tokenizer"}
    assert set(d) == sections | {"engine", "lora"}
    assert d["grpo"]["group_size"] == GRPOConfig().group_size
    assert d["grpo"]["dual_clip"] is None
    assert cfg.tokenizer_spec == "tiny"


def test_toml_file_sets_values_and_keeps_other_defaults(tmp_path):
    p = write(
        tmp_path,
        """
[model]
preset = "qwen3-0.6b"
dtype = "bfloat16"
[mesh]
data = 2
fsdp = -1
[data]
train_paths = ["a.jsonl", "b.jsonl"]
seq_len = 4096
[optim]
lr = 1          # an int where a float is expected is fine
[grpo]
group_size = 16
dual_clip = 3.0
overlap = false
""",
    )
    cfg = load_config(str(p), [])
    assert cfg.model.preset == "qwen3-0.6b" and cfg.model.dtype == "bfloat16"
    assert cfg.mesh.shape() == {"data": 2, "fsdp": -1, "tensor": 1}
    assert cfg.mesh.resolve(8) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert cfg.data.train_paths == ("a.jsonl", "b.jsonl")
    assert cfg.data.seq_len == 4096
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.grpo.group_size == 16 and cfg.grpo.dual_clip == 3.0 and cfg.grpo.overlap is False
    assert cfg.grpo.clip_high == GRPOConfig().clip_high  # untouched default
    hash(cfg)  # frozen and hashable (tuples, not lists)


def test_overrides_are_typed_and_applied_in_order(tmp_path):
    p = write(tmp_path, "[grpo]\ngroup_size = 4\n")
    cfg = load_config(
        p,
        [
            "grpo.group_size=12",
            "grpo.kl_beta=1e-3",
            "grpo.overlap=off",
            "grpo.dynamic_sampling=yes",
            "grpo.dual_clip=2.5",
            "grpo.dual_clip=none",  # last one wins, and none clears an optional field
            "grpo.minibatch_size=24",
            "model.preset=qwen3-8b",
            "model.hf_dir='/ckpt/Qwen3 8B'",
            "data.train_paths=x.jsonl, y.jsonl",
            'data.eval_paths=["e1.jsonl", "e2.jsonl"]',
            "train.out_dir=runs/a=b",  # only the first '=' splits
            "optim.warmup_steps=1_000",
            "tokenizer.spec=qwen3",
        ],
    )
    assert cfg.grpo.group_size == 12
    assert cfg.grpo.kl_beta == pytest.approx(1e-3) and isinstance(cfg.grpo.kl_beta, float)
    assert cfg.grpo.overlap is False and cfg.grpo.dynamic_sampling is True
    assert cfg.grpo.dual_clip is None
    assert cfg.grpo.minibatch_size == 24
    assert cfg.model.preset == "qwen3-8b" and cfg.model.hf_dir == "/ckpt/Qwen3 8B"
    assert cfg.data.train_paths == ("x.jsonl", "y.jsonl")
    assert cfg.data.eval_paths == ("e1.jsonl", "e2.jsonl")
    assert cfg.train.out_dir == "runs/a=b"
    assert cfg.optim.warmup_steps == 1000
    assert cfg.tokenizer_spec == "qwen3"
    # with_overrides on an existing config gives the same result as load_config.
    base = load_config(p, [])
    assert base.with_overrides(["grpo.group_size=12"]).grpo.group_size == 12
    assert base.grpo.group_size == 4  # the original is untouched


def test_unknown_keys_and_sections_name_the_valid_ones(tmp_path):
    with pytest.raises(
        ConfigError, match=r"grpo\.'groupsize'.*valid keys in \[grpo\]:.*group_size"
    ):
        load_config(None, ["grpo.groupsize=4"])
    p = write(tmp_path, "[optim]\nlearning_rate = 1e-4\n")
    with pytest.raises(ConfigError, match=r"optim\.'learning_rate'.*valid keys.*\blr\b"):
        load_config(p, [])
    p = write(tmp_path, "[grpoo]\ngroup_size = 4\n")
    with pytest.raises(ConfigError, match=r"unknown config section 'grpoo'.*grpo"):
        load_config(p, [])
    with pytest.raises(ConfigError, match="unknown config section 'foo'"):
        load_config(None, ["foo.bar=1"])
    p = write(tmp_path, "steps = 3\n")
    with pytest.raises(ConfigError, match=r"\[steps\]|section 'steps'"):
        load_config(p, [])


@pytest.mark.parametrize(
    "override,pattern",
    [
        ("grpo.group_size=abc", r"grpo\.group_size: expected int, got 'abc'"),
        ("grpo.group_size=2.5", r"grpo\.group_size: expected int"),
        ("grpo.kl_beta=lots", r"grpo\.kl_beta: expected float"),
        ("grpo.overlap=maybe", r"grpo\.overlap: expected bool"),
        ("grpo.group_size=none", r"grpo\.group_size: expected int"),
        ("data.train_paths=[1, 2]", r"data\.train_paths\[0\]: expected str"),
        ("data.train_paths=[unquoted]", r"data\.train_paths: cannot parse"),
    ],
)
def test_override_type_errors_name_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


@pytest.mark.parametrize(
    "toml,pattern",
    [
        ('[grpo]\ngroup_size = "8"\n', r"grpo\.group_size: expected int, got str '8'"),
        ("[grpo]\ngroup_size = 8.0\n", r"grpo\.group_size: expected int, got float"),
        ("[grpo]\nkl_beta = true\n", r"grpo\.kl_beta: expected float, got bool"),
        ("[grpo]\noverlap = 1\n", r"grpo\.overlap: expected bool, got int"),
        ('[data]\ntrain_paths = "a.jsonl"\n', r"data\.train_paths: expected list of str"),
        ("[model]\npreset = 3\n", r"model\.preset: expected str"),
        ('[grpo]\ndual_clip = "x"\n', r"grpo\.dual_clip: expected float or none"),
        ("grpo = 3\n", r"\[grpo\] must be a table"),
    ],
)
def test_toml_type_errors_name_the_key(tmp_path, toml, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path, toml), [])


@pytest.mark.parametrize(
    "override,pattern",
    [
        ("grpo.aggregation=mean", r"grpo\.aggregation='mean'; choose one of"),
        ("grpo.advantage_scale=zscore", r"grpo\.advantage_scale"),
        ("grpo.ratio_level=seq", r"grpo\.ratio_level"),
        ("grpo.pipeline=fast", r"grpo\.pipeline"),
        ("grpo.group_size=1", r"grpo\.group_size=1: must be >= 2"),
        ("grpo.dual_clip=0.5", r"grpo\.dual_clip=0\.5: must be > 1"),
        ("grpo.minibatch_size=5", r"grpo\.minibatch_size=5: must be a divisor of .* = 32"),
        ("grpo.top_p=0", r"grpo\.top_p"),
        ("model.preset=qwen9", r"model\.preset='qwen9'; choose one of"),
        ("model.dtype=fp8", r"model\.dtype"),
        ("model.remat=everything", r"model\.remat"),
        ("model.attention_impl=magic", r"model\.attention_impl"),
        ("mesh.tensor=0", r"mesh\.tensor=0"),
        ("mesh.data=-1", r"only one axis may be -1"),
        ("optim.schedule=step", r"optim\.schedule"),
        ("optim.lr=0", r"optim\.lr=0\.0: must be > 0"),
        ("envs.sandbox=vm", r"envs\.sandbox"),
        ("sft.thinking=maybe", r"sft\.thinking"),
        ("train.checkpoint_keep=0", r"train\.checkpoint_keep"),
        ("grpo.max_staleness=0", r"grpo\.overlap .* set grpo\.max_staleness >= 1"),
        ("engine.prefill_chunk=100", r"engine\.prefill_chunk=100: must be a multiple of"),
        ("engine.dtype=fp8", r"engine\.dtype"),
    ],
)
def test_invalid_values_name_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_override_can_fix_a_value_the_file_gets_wrong(tmp_path):
    p = write(tmp_path, '[grpo]\naggregation = "mean"\n')
    with pytest.raises(ConfigError, match="aggregation"):
        load_config(p, [])
    assert load_config(p, ["grpo.aggregation=sequence"]).grpo.aggregation == "sequence"


def test_hf_dir_skips_the_preset_check_and_supplies_the_tokenizer():
    cfg = load_config(None, ["model.preset=custom", "model.hf_dir=/ckpt/q"])
    assert cfg.tokenizer_spec == "/ckpt/q"


def test_bad_override_syntax_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["grpo.group_size"])
    with pytest.raises(ConfigError, match="must be section.key"):
        load_config(None, ["group_size=3"])
    with pytest.raises(ConfigError, match="must be section.key"):
        load_config(None, ["a.b.c=3"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", [])
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[grpo\n"), [])


def test_mesh_resolve():
    cfg = load_config(None, ["mesh.fsdp=-1", "mesh.tensor=4"])
    assert cfg.mesh.resolve(16) == {"data": 1, "fsdp": 4, "tensor": 4}
    with pytest.raises(ConfigError, match="cannot split 6 devices"):
        cfg.mesh.resolve(6)
    fixed = load_config(None, ["mesh.fsdp=2"])
    with pytest.raises(ConfigError, match="needs 2 devices, 4 available"):
        fixed.mesh.resolve(4)


def test_round_trip_through_toml_on_disk(tmp_path):
    cfg = load_config(
        None,
        ["grpo.dual_clip=1.5", "data.train_paths=a,b", "model.hf_dir=/x", "optim.lr=3e-4"],
    )
    path = tmp_path / "saved.toml"
    cfg.save(path)
    assert load_config(path, []) == cfg
    assert tomllib.loads(path.read_text())["grpo"]["dual_clip"] == 1.5
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_load(path):
    cfg = load_config(path, [])
    # Every key written in the file took effect (nothing silently ignored).
    raw = tomllib.loads(path.read_text())
    d = cfg.to_dict()
    for section, values in raw.items():
        for key, value in values.items():
            assert d[section][key] == value, f"{path.name}: {section}.{key}"
    # The model it names is a real preset, and the tensor axis divides its KV heads.
    assert cfg.model.preset in PRESETS
    mcfg = Qwen3Config.preset(cfg.model.preset)
    assert mcfg.num_key_value_heads % cfg.mesh.tensor == 0


def test_expected_example_configs_exist():
    names = {p.name for p in CONFIG_DIR.glob("*.toml")}
    assert {"tiny_sft.toml", "tiny_grpo.toml"} <= names
    for size in ("0.6b", "1.7b", "4b", "8b", "14b", "32b"):
        assert f"qwen3-{size}_sft.toml" in names and f"qwen3-{size}_grpo.toml" in names


def test_grpo_task_selection_and_unfinished_answers():
    c = load_config(None, ["grpo.tasks=calc-test-001,cstr-config-002", "grpo.submit_unfinished=on"])
    assert c.grpo.tasks == ("calc-test-001", "cstr-config-002")
    assert c.grpo.submit_unfinished is True
    assert load_config(None, []).grpo.tasks == ()  # default: every train-split task
    with pytest.raises(ConfigError, match=r"grpo\.tasks.*distinct"):
        load_config(None, ["grpo.tasks=a,a"])

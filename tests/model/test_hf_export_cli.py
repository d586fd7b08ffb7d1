"""`jaxrepair import-hf` / `export-hf` as a user runs them (real CLI subprocesses), and proof
that conversion streams instead of gathering the model onto one device.

Oracles: transformers itself (logits of the exported directory vs the model that was saved),
the source safetensors bytes, the tokenizer's own token ids, file modes on disk, and the live
device buffers JAX reports (`jax.live_arrays`) plus Python's allocation tracer for the host.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, GenerationConfig

from jaxrepair.model import load_hf, make_mesh
from jaxrepair.model.hf import save_hf
from jaxrepair.train.checkpoint import export_hf, import_hf, load_params
from tests.model.hf_oracle import hf_logits, make_hf_model
from tests.train.trajectories import make_tokenizer

VOCAB = 512  # the test tokenizer's size: its stop tokens are real ids of the model


def _cli(*argv: str) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it (umask 022, this test's 8 CPU devices)."""
    env = dict(os.environ)
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    umask_then_run = 'umask 022 && exec "$0" "$@"'  # (no preexec_fn: fork in a JAX process)
    return subprocess.run(
        ["sh", "-c", umask_then_run, sys.executable, "-m", "jaxrepair.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )


def _ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stderr[-3000:]


def _weights(d: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> dict:
    """Two transformers models of one architecture (A, B), each with the test tokenizer; A
    with Qwen3's published-style generation_config.json, B with none."""
    root = tmp_path_factory.mktemp("hf_cli")
    tok = make_tokenizer(vocab_size=VOCAB)
    models = {}
    for name, seed in (("A", 0), ("B", 1)):
        models[name] = make_hf_model(root / name, seed=seed, vocab_size=VOCAB, num_hidden_layers=2)
        tok.save(root / name)
    gen_a = {
        "bos_token_id": tok.endoftext_id,
        "do_sample": True,
        "eos_token_id": [tok.im_end_id, tok.endoftext_id],
        "pad_token_id": tok.endoftext_id,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
    }
    (root / "A" / "generation_config.json").write_text(json.dumps(gen_a))
    (root / "B" / "generation_config.json").unlink()
    return {"root": root, "models": models, "tok": tok, "gen_a": gen_a}


def test_fp32_round_trip_is_bit_exact_and_carries_generation_config(hf: dict) -> None:
    """import-hf -> export-hf --dtype float32: every tensor byte-identical to the source, files
    0644, and the source's generation_config.json (two eos ids, sampling defaults) intact."""
    root = hf["root"]
    _ok(_cli("import-hf", str(root / "A"), str(root / "ckA")))
    carried = root / "ckA" / "tokenizer" / "generation_config.json"
    assert json.loads(carried.read_text()) == hf["gen_a"]
    _ok(_cli("export-hf", str(root / "ckA"), str(root / "outA"), "--dtype", "float32"))

    src, got = _weights(root / "A"), _weights(root / "outA")
    assert src.keys() == got.keys()
    for k in src:
        assert got[k].dtype == np.float32 and got[k].tobytes() == src[k].tobytes(), k
    assert json.loads((root / "outA" / "generation_config.json").read_text()) == hf["gen_a"]
    assert (
        GenerationConfig.from_pretrained(root / "outA").eos_token_id == hf["gen_a"]["eos_token_id"]
    )
    for p in (root / "outA").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name
    assert stat.S_IMODE((root / "outA").stat().st_mode) == 0o755
    assert not [p for p in root.iterdir() if ".partial-" in p.name]


def test_export_into_another_models_directory_refuses_then_replaces(hf: dict) -> None:
    """B exported into A's transformers directory: refused without --replace (exit != 0, every
    file unchanged); with --replace transformers loads B's weights (A's model.safetensors is
    gone), B's generation config stops at the tokenizer's real eos ids, other files stay."""
    root, tok = hf["root"], hf["tok"]
    ck_b = import_hf(root / "B", root / "ckB")  # (the CLI import is covered above)
    target = root / "A_copy"
    shutil.copytree(root / "A", target)
    (target / "README.md").write_text("model card\n")
    before = _snapshot(target)

    r = _cli("export-hf", str(ck_b), str(target))
    assert r.returncode != 0
    assert "is not empty" in r.stderr and "--replace" in r.stderr, r.stderr[-2000:]
    assert _snapshot(target) == before

    _ok(_cli("export-hf", str(ck_b), str(target), "--replace"))
    names = {p.name for p in target.iterdir()}
    assert "model.safetensors" not in names and "README.md" in names
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=(2, 13))
    want_b = hf_logits(hf["models"]["B"], tokens)
    got = hf_logits(model, tokens)
    np.testing.assert_allclose(got, want_b, atol=1e-5, rtol=1e-5)
    assert np.abs(hf_logits(hf["models"]["A"], tokens) - got).max() > 1e-2  # not A's

    gen = json.loads((target / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [tok.im_end_id, tok.endoftext_id]
    assert gen["pad_token_id"] == tok.endoftext_id
    assert all(0 <= i < VOCAB for i in gen["eos_token_id"])
    assert model.generation_config.eos_token_id == [tok.im_end_id, tok.endoftext_id]


def test_import_from_a_missing_directory_creates_nothing(tmp_path: Path) -> None:
    """A clear one-line reason, no orbax shutdown noise, and no output directory."""
    r = _cli("import-hf", str(tmp_path / "no-such-model"), str(tmp_path / "ck"))
    assert r.returncode != 0
    assert "no-such-model does not exist" in r.stderr, r.stderr[-2000:]
    assert "cannot schedule new futures" not in r.stderr
    assert not (tmp_path / "ck").exists()


# ----------------------------------------------------------------------------- streaming
class _DeviceMeter:
    """Largest bytes any one device held, over every moment JAX moved data (device_put,
    assembling a sharded array, device_get), counted from the live buffers JAX reports."""

    def __init__(self) -> None:
        self.rebase()
        self.peak = 0
        self.samples = 0

    def rebase(self) -> None:
        """Count from what the devices hold now, after collecting garbage: arrays an earlier
        test left for the collector would otherwise be freed mid-measurement and hide bytes."""
        gc.collect()
        self.base = self._per_device()

    @staticmethod
    def _per_device() -> dict[int, int]:
        seen: set[tuple[int, int]] = set()
        held: dict[int, int] = {}
        for arr in jax.live_arrays():
            for shard in arr.addressable_shards:
                data = shard.data
                key = (shard.device.id, data.unsafe_buffer_pointer())
                if key not in seen:
                    seen.add(key)
                    held[shard.device.id] = held.get(shard.device.id, 0) + data.nbytes
        return held

    def sample(self) -> None:
        now = self._per_device()
        self.samples += 1
        self.peak = max([self.peak] + [b - self.base.get(d, 0) for d, b in now.items()])

    def hook(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("device_put", "device_get", "make_array_from_single_device_arrays"):
            original = getattr(jax, name)

            def wrapped(*a, _original=original, **k):
                self.sample()  # before: what the devices hold while the host prepares data
                out = _original(*a, **k)
                self.sample()
                return out

            monkeypatch.setattr(jax, name, wrapped)


def test_import_and_export_never_hold_the_whole_model_on_one_device(tmp_path, monkeypatch):
    """On 8 devices: import and export keep every device under a quarter of the model (its
    1/8 share plus one tensor in flight) and export's host buffers likewise; the same meter
    sees the whole model on device 0 when loading onto a single device (the meter works)."""
    model = make_hf_model(
        tmp_path / "src",
        vocab_size=256,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
    )
    model_bytes = sum(p.numel() * 4 for p in model.parameters())
    largest = max(p.numel() * 4 for p in model.parameters())
    assert jax.device_count() == 8 and largest * 8 < model_bytes

    meter = _DeviceMeter()
    meter.hook(monkeypatch)
    import_hf(tmp_path / "src", tmp_path / "ck")
    import_peak, import_samples = meter.peak, meter.samples

    meter.peak = 0
    export_hf(tmp_path / "ck", tmp_path / "out")
    export_peak = meter.peak
    src, got = _weights(tmp_path / "src"), _weights(tmp_path / "out")
    assert src.keys() == got.keys() and all(src[k].tobytes() == got[k].tobytes() for k in src)

    # host side of export: restore first (untraced), then trace only the writing
    cfg, params, _ = load_params(tmp_path / "ck", mesh=make_mesh({"fsdp": -1}))
    tracemalloc.start()
    try:
        save_hf(tmp_path / "out2", cfg, params)
        _, host_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del params

    meter.rebase()
    meter.peak = 0
    one_device = load_hf(tmp_path / "src", dtype=np.float32)[1]  # everything on device 0
    single_peak = meter.peak
    del one_device

    print(
        f"model {model_bytes} B, largest tensor {largest} B; peak per device: import "
        f"{import_peak}, export {export_peak}, single-device load {single_peak}; export host "
        f"peak {host_peak} B"
    )
    assert import_samples >= 8 * 11  # the meter saw every per-device placement
    assert 0 < import_peak < model_bytes / 4
    assert 0 < export_peak < model_bytes / 4
    assert host_peak < model_bytes / 4
    assert single_peak >= model_bytes

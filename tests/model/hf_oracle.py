"""Tiny random transformers Qwen3 models: the oracle the JAX model is checked against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Qwen3Config as HFQwen3Config
from transformers import Qwen3ForCausalLM


def make_hf_model(
    out_dir: Path,
    *,
    seed: int = 0,
    vocab_size: int = 96,
    hidden_size: int = 64,
    intermediate_size: int = 96,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int = 16,
    tie_word_embeddings: bool = False,
    rope_parameters: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Qwen3ForCausalLM:
    """A randomly initialised HF Qwen3 saved with save_pretrained into out_dir.

    Norm weights are randomised too (HF initialises them to 1, which would hide a missing norm).
    """
    torch.manual_seed(seed)
    cfg = HFQwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        tie_word_embeddings=tie_word_embeddings,
        rope_parameters=rope_parameters or {"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        attn_implementation="eager",
    )
    model = randomize(Qwen3ForCausalLM(cfg).eval(), 0.08).to(dtype)
    model.save_pretrained(out_dir)
    return model


def randomize(model: Any, std: float) -> Any:
    """Random weights (std) and norm weights around 1 (HF's 1.0 would hide a missing norm)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(std * torch.randn_like(p))
    return model


def hf_logits(model: Qwen3ForCausalLM, tokens: np.ndarray, attention_mask=None) -> np.ndarray:
    with torch.no_grad():
        ids = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
        am = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask))
        return model(input_ids=ids, attention_mask=am).logits.float().numpy()

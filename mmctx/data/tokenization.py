"""Text tokenization: one small wrapper over ``tokenizers`` and ``transformers`` tokenizers.

Where a tokenizer comes from:

- :func:`resolve_tokenizer`: a ``tokenizer.json`` (Hugging Face ``tokenizers``), a local
  ``transformers`` folder, a ``tokenizers`` JSON string (as checkpoints keep it), or any
  ``AutoTokenizer`` hub id (e.g. a pretrained text tower's own; downloaded and cached by
  ``transformers`` as usual, ``HF_HUB_OFFLINE`` honoured);
  :func:`load_tokenizer` reads local paths only;
- :func:`train_tokenizer`: trained on texts (the training split) as
  :class:`TokenizerTraining` says: word-level (:func:`train_word_tokenizer`) or byte-level
  BPE (:func:`train_bpe_tokenizer`).

All expose the same :class:`TextTokenizer` interface: ``encode``/``decode`` and the special
ids a model needs (``pad_id``, ``bos_id``, ``eos_id``, ``unk_id``).
:func:`unknown_token_rate` measures how well a vocabulary fits texts. The built-in asset
pack's tokenizer is at :func:`mmctx.data.builtin.asset_pack.default_tokenizer_path`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "TextTokenizer",
    "TokenizerTraining",
    "load_tokenizer",
    "resolve_tokenizer",
    "train_bpe_tokenizer",
    "train_tokenizer",
    "train_word_tokenizer",
    "unknown_token_rate",
]

# Candidate token strings for each special role, in order of preference.
_SPECIALS: dict[str, tuple[str, ...]] = {
    "pad": ("[PAD]", "<pad>", "<|pad|>"),
    "unk": ("[UNK]", "<unk>", "<|unk|>"),
    "bos": ("[BOS]", "<s>", "<bos>", "<|startoftext|>", "[CLS]"),
    "eos": ("[EOS]", "</s>", "<eos>", "<|endoftext|>", "[SEP]"),
    "mask": ("[MASK]", "<mask>"),
}
#: Special tokens of :func:`train_word_tokenizer`, ids 0..3 in this order.
_WORD_SPECIALS: tuple[str, ...] = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


class TextTokenizer:
    """A tokenizer with the interface mmctx needs, over either backend.

    Build it with :func:`load_tokenizer`, or directly from a ``tokenizers.Tokenizer`` or a
    ``transformers`` tokenizer. ``encode`` adds no special tokens (encoders need none;
    decoders add ``bos_id``/``eos_id`` themselves).

    Args:
        backend: a ``tokenizers.Tokenizer`` or a ``transformers.PreTrainedTokenizerBase``.
        source: where it was loaded from, for error messages.
        specials: the special ids by role (``pad``, ``unk``, ``bos``, ``eos``, ``mask``), as
            :attr:`specials` gives them; None: found by the tokens' names (``tokenizers``)
            or from the ``transformers`` tokenizer's attributes.

    Raises:
        ValueError: if the tokenizer has no padding token.
    """

    def __init__(self, backend: Any, source: str = "<memory>", specials: dict[str, int | None] | None = None) -> None:
        self.backend = backend
        self.source = source
        self._is_hf_tokenizers = type(backend).__module__.startswith("tokenizers")
        if specials is not None:
            ids = {role: specials.get(role) for role in _SPECIALS}
        elif self._is_hf_tokenizers:
            ids = {role: self._find(names) for role, names in _SPECIALS.items()}
        else:  # transformers
            ids = {
                "pad": backend.pad_token_id,
                "unk": backend.unk_token_id,
                "bos": backend.bos_token_id
                if backend.bos_token_id is not None
                else backend.cls_token_id,
                "eos": backend.eos_token_id
                if backend.eos_token_id is not None
                else backend.sep_token_id,
                "mask": getattr(backend, "mask_token_id", None),
            }
        if ids["pad"] is None:
            raise ValueError(
                f"tokenizer {source}: no padding token (looked for {list(_SPECIALS['pad'])}); "
                "add one, mmctx pads batches with it"
            )
        self.pad_id: int = int(ids["pad"])
        self.unk_id: int | None = ids["unk"]
        self.bos_id: int | None = ids["bos"]
        self.eos_id: int | None = ids["eos"]
        self.mask_id: int | None = ids["mask"]

    def _find(self, names: tuple[str, ...]) -> int | None:
        for name in names:
            idx = self.backend.token_to_id(name)
            if idx is not None:
                return int(idx)
        return None

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special and added tokens included (V)."""
        if self._is_hf_tokenizers:
            return int(self.backend.get_vocab_size(with_added_tokens=True))
        return len(self.backend)

    @property
    def special_ids(self) -> set[int]:
        """The ids of the special tokens this tokenizer has."""
        return {
            i
            for i in (self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.mask_id)
            if i is not None
        }

    @property
    def specials(self) -> dict[str, int | None]:
        """The special ids by role: ``pad``, ``unk``, ``bos``, ``eos``, ``mask``."""
        return {"pad": self.pad_id, "unk": self.unk_id, "bos": self.bos_id, "eos": self.eos_id, "mask": self.mask_id}

    def to_json(self) -> str | None:
        """The ``tokenizers`` JSON of this tokenizer (``Tokenizer.to_str()``; for a fast
        ``transformers`` tokenizer, its backend's), or None for a slow ``transformers`` one.
        :meth:`from_json` with :attr:`specials` rebuilds a tokenizer that gives the same ids."""
        backend = self.backend if self._is_hf_tokenizers else getattr(self.backend, "backend_tokenizer", None)
        return backend.to_str() if backend is not None else None

    @classmethod
    def from_json(cls, text: str, specials: dict[str, int | None] | None = None, source: str = "<json>") -> TextTokenizer:
        """A tokenizer from a ``tokenizers`` JSON string (:meth:`to_json`).

        Raises:
            ValueError: if ``text`` is not a tokenizers JSON.
        """
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_str(text)
        except Exception as error:  # tokenizers raises bare Exceptions on bad JSON
            raise ValueError(f"not a tokenizers JSON ({error})") from error
        return cls(backend, source=source, specials=specials)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens.

        Raises:
            ValueError: if ``text`` is not a string or is empty/whitespace only.
        """
        if not isinstance(text, str):
            raise ValueError(f"expected text as a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError("empty or whitespace-only text")
        if self._is_hf_tokenizers:
            return list(self.backend.encode(text, add_special_tokens=False).ids)
        return list(self.backend.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int] | Any) -> str:
        """Text of ``ids`` (a list or a 1-D tensor), special tokens skipped."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        return self.backend.decode(ids, skip_special_tokens=True)

    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer into ``directory`` (created); returns the path to load it from.

        A ``tokenizers`` tokenizer is written as ``directory/tokenizer.json``, a
        ``transformers`` one with ``save_pretrained``; :func:`load_tokenizer` reads both.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._is_hf_tokenizers:
            path = directory / "tokenizer.json"
            self.backend.save(str(path))
            return path
        self.backend.save_pretrained(str(directory))
        return directory

    def __repr__(self) -> str:
        return (
            f"TextTokenizer(source={self.source!r}, vocab_size={self.vocab_size}, "
            f"pad_id={self.pad_id}, bos_id={self.bos_id}, eos_id={self.eos_id})"
        )


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """Load a tokenizer from a local path; never touches the network.

    Args:
        path: a ``tokenizer.json`` file (``tokenizers``), or a folder holding either a
            ``transformers`` tokenizer (``tokenizer_config.json``; loaded with
            ``AutoTokenizer.from_pretrained(path, local_files_only=True)``) or a bare
            ``tokenizer.json``.

    Raises:
        FileNotFoundError: if ``path`` does not exist or holds no tokenizer.
    """
    path = Path(path)
    if path.is_file():
        from tokenizers import Tokenizer

        try:
            return TextTokenizer(Tokenizer.from_file(str(path)), source=str(path))
        except Exception as error:  # tokenizers raises bare Exceptions on bad JSON
            raise ValueError(f"{path}: not a tokenizers tokenizer.json ({error})") from error
    if path.is_dir():
        if (path / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            backend = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            return TextTokenizer(backend, source=str(path))
        if (path / "tokenizer.json").is_file():
            return load_tokenizer(path / "tokenizer.json")
        raise FileNotFoundError(
            f"{path}: folder holds neither tokenizer_config.json (transformers) nor "
            "tokenizer.json (tokenizers)"
        )
    raise FileNotFoundError(f"tokenizer not found: {path}")


def train_word_tokenizer(
    texts: Iterable[str], min_frequency: int = 1, max_size: int | None = None, lowercase: bool = True
) -> TextTokenizer:
    """A word-level ``tokenizers`` tokenizer whose vocabulary is the words of ``texts``.

    Lower-cased, split on whitespace and punctuation (like the default data's tokenizer);
    ``[PAD]`` 0, ``[UNK]`` 1, ``[BOS]`` 2, ``[EOS]`` 3, then the words seen at least
    ``min_frequency`` times, most frequent first, ties in alphabetical order — the same
    texts always give the same ids (``tokenizers``' own trainer does not promise that),
    so a new process that rebuilds the tokenizer from the same file can read a checkpoint.

    Args:
        texts: the training captions.
        min_frequency: rarer words become ``[UNK]``.
        max_size: most words kept (specials excluded); None: all.
        lowercase: lower-case the text first (the default data's tokenizer does).
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    normalizer = normalizers.Lowercase() if lowercase else normalizers.Sequence([])
    pre = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(behavior="isolated")])
    counts: Counter = Counter()
    for text in texts:
        counts.update(word for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    words = sorted((w for w, c in counts.items() if c >= min_frequency and w not in _WORD_SPECIALS),
                   key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[:max_size]
    vocab = {token: i for i, token in enumerate(_WORD_SPECIALS)}
    vocab.update({w: len(_WORD_SPECIALS) + i for i, w in enumerate(words)})
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre
    backend.add_special_tokens(list(_WORD_SPECIALS))
    return TextTokenizer(backend, source=f"<word-level, {len(vocab)} tokens>")


@dataclass(frozen=True)
class TokenizerTraining:
    """How to train a tokenizer on the training split's texts (a data module's
    ``train_tokenizer``), e.g. in YAML ``train_tokenizer: {kind: bpe, vocab_size: 8000}``.

    Attributes:
        kind: "word" (whole words, lower-cased, split on whitespace and punctuation; unseen
            words become ``[UNK]``) or "bpe" (byte-level BPE: any text encodes, no ``[UNK]``).
        vocab_size: "word": most words kept (None: every word seen ``min_frequency`` times);
            "bpe": the target vocabulary size (None: 8000), specials included.
        min_frequency: words (word) or merges (bpe) seen fewer times are left out.
        lowercase: lower-case the text first.
    """

    kind: Literal["word", "bpe"] = "word"
    vocab_size: int | None = None
    min_frequency: int = 1
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("word", "bpe"):
            raise ValueError(f"TokenizerTraining: kind must be 'word' or 'bpe', got {self.kind!r}")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ValueError(f"TokenizerTraining: vocab_size must be positive, got {self.vocab_size}")
        if self.min_frequency < 1:
            raise ValueError(f"TokenizerTraining: min_frequency must be >= 1, got {self.min_frequency}")


def train_tokenizer(texts: Iterable[str], training: TokenizerTraining) -> TextTokenizer:
    """A tokenizer trained on ``texts`` as ``training`` says (deterministic: the same texts
    give the same ids)."""
    texts = list(texts)
    if training.kind == "word":
        return train_word_tokenizer(texts, training.min_frequency, training.vocab_size, lowercase=training.lowercase)
    return train_bpe_tokenizer(texts, training.vocab_size or 8000, training.min_frequency, lowercase=training.lowercase)


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2, lowercase: bool = True
) -> TextTokenizer:
    """A byte-level BPE ``tokenizers`` tokenizer trained on ``texts``.

    ``[PAD]`` 0, ``[UNK]`` 1, ``[BOS]`` 2, ``[EOS]`` 3, then the 256 byte symbols and the
    merges (NFKC-normalised, optionally lower-cased, GPT-2's byte-level pre-tokenizer): every
    text encodes without ``[UNK]``, and decoding gives the text back (up to normalisation).

    Args:
        texts: the training texts.
        vocab_size: target vocabulary size, specials and bytes included.
        min_frequency: merges seen fewer times are not learnt.
        lowercase: lower-case the text first.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    backend = Tokenizer(BPE(unk_token="[UNK]"))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()] if lowercase else [normalizers.NFKC()])
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(_WORD_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    return TextTokenizer(backend, source=f"<byte-level BPE, {backend.get_vocab_size()} tokens>")


def resolve_tokenizer(name: str) -> TextTokenizer:
    """The tokenizer ``name`` stands for: a ``tokenizers`` JSON string (starts with ``{``),
    a local ``tokenizer.json`` or ``transformers`` folder (:func:`load_tokenizer`), or else an
    ``AutoTokenizer`` hub id (downloaded and cached by ``transformers``; ``HF_HUB_OFFLINE=1``
    uses the cache only).

    Raises:
        FileNotFoundError: ``name`` is neither a local tokenizer nor a loadable hub id (the
            message says how to make it work).
    """
    text = name.strip()
    if text.startswith("{"):
        return TextTokenizer.from_json(text, source="<tokenizer JSON>")
    path = Path(name).expanduser()
    if path.exists():
        return load_tokenizer(path)
    if name.endswith(".json") or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"tokenizer not found: {name}")
    try:
        from transformers import AutoTokenizer

        backend = AutoTokenizer.from_pretrained(name)
    except Exception as error:  # OSError / ValueError / HF hub errors, depending on the cause
        raise FileNotFoundError(
            f"tokenizer {name!r}: not a local file or folder, and transformers cannot load it as a hub id "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Give a "
            "tokenizer.json or a folder saved with save_pretrained, or, for a hub id, a machine with "
            "network access or the model in the Hugging Face cache (HF_HUB_OFFLINE=1 reads the cache only)"
        ) from error
    return TextTokenizer(backend, source=name)


def unknown_token_rate(tokenizer: TextTokenizer, texts: Iterable[str]) -> tuple[float, int]:
    """The fraction of the tokens of ``texts`` that are the tokenizer's unknown token, and
    the number of tokens (0.0 for a tokenizer without one, e.g. byte-level BPE)."""
    total = unknown = 0
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            continue
        ids = tokenizer.encode(text)
        total += len(ids)
        if tokenizer.unk_id is not None:
            unknown += sum(1 for i in ids if i == tokenizer.unk_id)
    return (unknown / total if total else 0.0), total

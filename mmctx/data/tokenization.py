"""Text tokenization: one small wrapper over ``tokenizers`` and ``transformers`` tokenizers.

:func:`load_tokenizer` reads either a ``tokenizer.json`` (Hugging Face ``tokenizers``) or a
local folder saved by ``transformers`` (``AutoTokenizer``, ``local_files_only=True``: never
the hub). Both expose the same :class:`TextTokenizer` interface: ``encode``/``decode`` and
the special ids a model needs (``pad_id``, ``bos_id``, ``eos_id``, ``unk_id``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmctx.data.asset_pack import default_asset_dir

__all__ = ["TextTokenizer", "default_tokenizer_path", "load_tokenizer"]

# Candidate token strings for each special role, in order of preference.
_SPECIALS: dict[str, tuple[str, ...]] = {
    "pad": ("[PAD]", "<pad>", "<|pad|>"),
    "unk": ("[UNK]", "<unk>", "<|unk|>"),
    "bos": ("[BOS]", "<s>", "<bos>", "<|startoftext|>", "[CLS]"),
    "eos": ("[EOS]", "</s>", "<eos>", "<|endoftext|>", "[SEP]"),
    "mask": ("[MASK]", "<mask>"),
}


def default_tokenizer_path() -> Path:
    """The word-level ``tokenizer.json`` of the default asset pack."""
    return default_asset_dir() / "tokenizer.json"


class TextTokenizer:
    """A tokenizer with the interface mmctx needs, over either backend.

    Build it with :func:`load_tokenizer`, or directly from a ``tokenizers.Tokenizer`` or a
    ``transformers`` tokenizer. ``encode`` adds no special tokens (encoders need none;
    decoders add ``bos_id``/``eos_id`` themselves).

    Args:
        backend: a ``tokenizers.Tokenizer`` or a ``transformers.PreTrainedTokenizerBase``.
        source: where it was loaded from, for error messages.

    Raises:
        ValueError: if the tokenizer has no padding token.
    """

    def __init__(self, backend: Any, source: str = "<memory>") -> None:
        self.backend = backend
        self.source = source
        self._is_hf_tokenizers = type(backend).__module__.startswith("tokenizers")
        if self._is_hf_tokenizers:
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


def load_tokenizer(path: str | Path | None = None) -> TextTokenizer:
    """Load a tokenizer from a local path; never touches the network.

    Args:
        path: a ``tokenizer.json`` file (``tokenizers``), or a folder holding either a
            ``transformers`` tokenizer (``tokenizer_config.json``; loaded with
            ``AutoTokenizer.from_pretrained(path, local_files_only=True)``) or a bare
            ``tokenizer.json``. ``None`` is the default asset pack's tokenizer.

    Raises:
        FileNotFoundError: if ``path`` does not exist or holds no tokenizer.
    """
    path = Path(path) if path is not None else default_tokenizer_path()
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

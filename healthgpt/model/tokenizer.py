"""One small tokenizer interface for the model code, with two implementations.

``HFTokenizer`` wraps any transformers tokenizer (Phi-3, Phi-4, the SmolLM2 GGUF tokenizer);
``ByteTokenizer`` is a dependency-free byte-level tokenizer for the randomly initialized tiny
preset, so tests and the offline demo need no tokenizer files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class TextTokenizer(Protocol):
    """What the formatter and the model need from a tokenizer."""

    bos_token_id: int | None
    eos_token_id: int
    pad_token_id: int

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with no BOS/EOS added; special tokens in the text map to their ids."""
        ...

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str: ...

    def add_special_tokens(self, tokens: Sequence[str]) -> int:
        """Add tokens that are never split; returns how many were new."""
        ...

    def token_to_id(self, token: str) -> int: ...

    def __len__(self) -> int: ...


class ByteTokenizer:
    """Bytes 0..255 plus special tokens; specials must look like ``<...>`` (no spaces)."""

    SPECIALS = ("<pad>", "<s>", "</s>")
    _special = re.compile(r"<[^<>\s]+>")

    def __init__(self, extra_special_tokens: Sequence[str] = (), size: int | None = None) -> None:
        """``size``: pad the vocabulary with ``<reserved_N>`` tokens up to this length, so a
        randomly initialized model has a real tokenizer's vocabulary size (its embedding rows,
        and the ids the image tokens get after it)."""
        self._id_of: dict[str, int] = {}
        self._token_of: list[str] = []
        for token in self.SPECIALS:
            self._add(token)
        self._offset = len(self._token_of)
        self._token_of.extend(f"<0x{b:02X}>" for b in range(256))
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, 1, 2
        self.add_special_tokens(extra_special_tokens)
        if size is not None:
            if size < len(self):
                raise ValueError(f"vocabulary size {size} < the {len(self)} byte-level tokens")
            self.add_special_tokens([f"<reserved_{i}>" for i in range(size - len(self))])

    def _add(self, token: str) -> bool:
        if token in self._id_of:
            return False
        if not self._special.fullmatch(token):
            raise ValueError(f"special token {token!r} must look like <...>")
        self._id_of[token] = len(self._token_of)
        self._token_of.append(token)
        return True

    def add_special_tokens(self, tokens: Sequence[str]) -> int:
        return sum(self._add(t) for t in tokens)

    def token_to_id(self, token: str) -> int:
        return self._id_of[token]

    def __len__(self) -> int:
        return len(self._token_of)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        pos = 0
        for match in self._special.finditer(text):
            token_id = self._id_of.get(match.group())
            if token_id is None:
                continue
            ids.extend(b + self._offset for b in text[pos : match.start()].encode())
            ids.append(token_id)
            pos = match.end()
        ids.extend(b + self._offset for b in text[pos:].encode())
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        out: list[str] = []
        buffer = bytearray()
        for i in ids:
            i = int(i)
            if self._offset <= i < self._offset + 256:
                buffer.append(i - self._offset)
                continue
            out.append(buffer.decode(errors="replace"))
            buffer.clear()
            if not skip_special_tokens:
                out.append(self._token_of[i])
        out.append(buffer.decode(errors="replace"))
        return "".join(out)


class HFTokenizer:
    """Adapter from a transformers tokenizer to :class:`TextTokenizer`."""

    def __init__(self, tokenizer, *, add_bos: bool | None = None) -> None:  # noqa: ANN001
        self.tok = tokenizer
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token")
        self.eos_token_id = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else tokenizer.eos_token_id
        # BOS only where the tokenizer itself would prepend one (Llama/Phi-3 style).
        if add_bos is None:
            probe = tokenizer("a").input_ids
            add_bos = bool(probe) and probe[0] == tokenizer.bos_token_id
        self.bos_token_id = tokenizer.bos_token_id if add_bos else None
        # The BOS the tokenizer declares, prepended or not (the official prompt code reads it).
        self.declared_bos_token_id = tokenizer.bos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def add_special_tokens(self, tokens: Sequence[str]) -> int:
        return self.tok.add_tokens(list(tokens), special_tokens=True)

    def token_to_id(self, token: str) -> int:
        token_id = self.tok.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tok.unk_token_id:
            raise KeyError(token)
        return token_id

    def __len__(self) -> int:
        return len(self.tok)

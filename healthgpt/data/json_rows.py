"""Helpers shared by the JSON-described sources (VQA-RAD, SLAKE, PathVQA, LLaVA-style JSON).

- label normalization these sources need beyond `vocab` (free-text body parts, split names,
  modality words inside questions and answers);
- a streaming JSON array / JSON Lines reader, so a 1.3M-sample conversation file is never
  held in memory whole;
- a small LRU cache of encoded PNGs, because QA sources ask many questions about one image.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

from healthgpt.data.vocab import normalize_modality

# ---------------------------------------------------------------------------------- labels

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validate": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


def normalize_split(label: object, default: str = "train") -> str:
    """Publisher split names (val, validate, dev, ...) onto train / validation / test."""
    key = str(label or "").strip().lower()
    if not key:
        return default
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split name {label!r}")
    return _SPLIT_ALIASES[key]


# Coarse body regions, first match wins: organ words map to the region they sit in so that
# "Chest_lungs", "Lung", "CHEST" and "thorax" all become "chest".
_BODY_REGIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("whole body", ("whole body", "wholebody")),
    ("head", ("head", "brain", "skull", "face", "orbit", "sinus", "cerebr")),
    ("neck", ("neck", "thyroid", "cervical")),
    ("chest", ("chest", "lung", "thorax", "heart", "cardiac", "mediastin", "pulmon", "rib")),
    (
        "abdomen",
        ("abd", "liver", "kidney", "renal", "pancrea", "spleen", "bowel", "colon", "stomach"),
    ),
    ("pelvis", ("pelvi", "bladder", "prostate", "uterus", "hip")),
    ("spine", ("spine", "spinal", "vertebr")),
    ("extremity", ("extremit", "hand", "foot", "knee", "shoulder", "arm", "leg", "wrist")),
)


def normalize_body_part(label: object) -> str | None:
    """A source's organ / location label as a coarse lowercase region (None when empty)."""
    text = str(label or "").strip().lower().replace("_", " ")
    if not text:
        return None
    for region, words in _BODY_REGIONS:
        if any(word in text for word in words):
            return region
    return re.sub(r"\s+", " ", text)


# Words that name a modality inside free text (questions, answers, PubMedVision labels).
_MODALITY_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (modality, re.compile(pattern))
    for modality, pattern in (
        ("CT", r"\bct\b|computed tomograph|\bcta\b"),
        ("MRI", r"\bmri?\b|magnetic resonance|\bt1\b|\bt2\b|\bflair\b|\bdwi\b|\badc\b"),
        ("X-Ray", r"x-?ray|radiograph|plain film|\bcxr\b|mammogra|fluorosc"),
        ("Ultrasound", r"ultrasound|sonogra|echocardiog|\bus\b"),
        ("Nuclear Medicine", r"\bpet\b|nuclear|scintigra|spect\b"),
        ("Fundus", r"fundus|retina"),
        ("OCT", r"optical coherence|\boct\b"),
        ("Dermoscopy", r"dermoscop|dermatoscop"),
        ("Endoscopy", r"endoscop|colonoscop"),
        ("Pathology", r"patholog|histolog|histopatholog|\bh&e\b|immunohisto"),
        ("Microscopy", r"microscop"),
    )
)


def modality_from_text(text: object) -> str | None:
    """The single modality a piece of free text names, or None if it names none or several."""
    if not text:
        return None
    direct = normalize_modality(str(text))
    if direct != "Other":
        return direct
    key = str(text).lower()
    found = {modality for modality, pattern in _MODALITY_WORDS if pattern.search(key)}
    return found.pop() if len(found) == 1 else None


# ------------------------------------------------------------------------------------ JSON


class JsonRowError(ValueError):
    """A JSON row (or the rest of a JSON file, from `position` on) that does not parse."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


def iter_json_rows(path: Path, chunk_chars: int = 1 << 20) -> Iterator[Any]:
    """Yield the elements of a top-level JSON array (`.json`) or the lines of `.jsonl`.

    Streams: only one element plus one chunk is in memory. Malformed input is *yielded* as a
    `JsonRowError` (a bad JSON Lines line, or the unparseable rest of an array), after the
    rows that parsed cleanly, so a reader can quarantine it rather than lose the good part.
    """
    if path.suffix == ".jsonl":
        yield from _iter_jsonl(path)
        return
    try:
        yield from _iter_json_array(path, chunk_chars)
    except JsonRowError as exc:
        yield exc


def _iter_jsonl(path: Path) -> Iterator[Any]:
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                yield JsonRowError(f"invalid JSON on line {number}: {exc}", number)


def _iter_json_array(path: Path, chunk_chars: int) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig") as handle:
        stream = _CharStream(handle, chunk_chars)
        if stream.next_non_space() != "[":
            raise JsonRowError("expected a JSON array at the top level", stream.offset)
        stream.pos += 1
        first = True
        while True:
            char = stream.next_non_space()
            if char == "]":
                return
            if not first:
                if char != ",":
                    raise JsonRowError(
                        f"invalid JSON at char {stream.offset}: expected ','", stream.offset
                    )
                stream.pos += 1
                stream.next_non_space()
            first = False
            yield stream.decode(decoder)


class _CharStream:
    """A text buffer over a file that grows on demand and drops what was consumed."""

    def __init__(self, handle, chunk_chars: int) -> None:
        self.handle = handle
        self.chunk_chars = chunk_chars
        self.buffer = ""
        self.pos = 0
        self.consumed = 0
        self.eof = False

    @property
    def offset(self) -> int:
        return self.consumed + self.pos

    def _more(self) -> bool:
        if self.eof:
            return False
        self.consumed += self.pos
        chunk = self.handle.read(self.chunk_chars)
        self.buffer = self.buffer[self.pos :] + chunk
        self.pos = 0
        self.eof = not chunk
        return bool(chunk)

    def next_non_space(self) -> str:
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._more():
                raise JsonRowError("unexpected end of JSON", self.offset)

    def decode(self, decoder: json.JSONDecoder) -> Any:
        while True:
            try:
                value, end = decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if self._more():
                    continue
                at = self.consumed + exc.pos
                raise JsonRowError(f"invalid JSON at char {at}: {exc.msg}", at) from exc
            if end == len(self.buffer) and self._more():
                continue  # a number or literal may continue in the next chunk
            self.pos = end
            return value


# ---------------------------------------------------------------------------------- images


class PngCache:
    """Encoded PNGs of recently used images, bounded, keyed by path (or by encoded bytes).

    QA sources ask 5-50 questions per image; re-decoding the JPEG for each would dominate
    ingestion time. Bounded so memory does not grow with the source.
    """

    def __init__(self, encode: Callable[[Any], bytes], max_items: int = 256) -> None:
        self.encode = encode
        self.max_items = max_items
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable) -> bytes:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        png = self.encode(key)
        self._items[key] = png
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return png

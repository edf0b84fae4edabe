"""A streaming reader of JSON arrays and JSON Lines, so a 1.3M-sample conversation file is
never held in memory whole (the JSON-described sources and the benchmark readers use it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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

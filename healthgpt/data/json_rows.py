"""A streaming reader of JSON arrays and JSON Lines, so a 1.3M-sample conversation file is
never held in memory whole (the JSON-described sources and the benchmark readers use it)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthgpt.data.limits import Limits


class JsonRowError(ValueError):
    """A JSON row that cannot be used, at char `position` of its file: it does not parse
    (then the rest of a JSON array is lost with it), is longer than `max_json_row_chars`,
    nests too deeply, or holds text that is not valid Unicode (those rows are skipped alone)."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


def iter_json_rows(
    path: Path, chunk_chars: int = 1 << 20, limits: Limits | None = None
) -> Iterator[Any]:
    """Yield the elements of a top-level JSON array (`.json`) or the lines of `.jsonl`.

    Streams: only one element plus one chunk is in memory, and never more than
    `limits.max_json_row_chars` of one element. Bad input is *yielded* as a `JsonRowError`
    in the row's place, so a reader can quarantine it rather than lose the good rows: a
    row that is too long or nests too deeply is skipped without being parsed, one with a
    byte that is not UTF-8 or a lone surrogate escape (`"\\ud800"`, which no Parquet
    file can hold) is refused at once; an array that stops parsing ends with one error for
    the rest.
    """
    limits = limits or Limits.from_options()
    if path.suffix == ".jsonl":
        yield from _iter_jsonl(path, limits.max_json_row_chars)
        return
    try:
        yield from _iter_json_array(path, chunk_chars, limits.max_json_row_chars)
    except JsonRowError as exc:
        yield exc


# A char that can only come from a byte that is not UTF-8 (read with surrogateescape) or
# from a lone surrogate escape; the second pattern finds escapes before decoding.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_HINT = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")


def text_problem(value: Any) -> str | None:
    """Why a decoded JSON value cannot be stored as UTF-8 text, or None. (The first problem
    in reading order: a dict's keys, then its values. Called on every record: one loop, and
    ASCII strings, the common case, skip the pattern.)"""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            match = None if item.isascii() else _SURROGATE.search(item)
            if match is not None:
                return _surrogate_problem(ord(match.group()))
        elif isinstance(item, dict):
            pending.extend(reversed([*item.keys(), *item.values()]))
        elif isinstance(item, list):
            pending.extend(reversed(item))
    return None


def _surrogate_problem(code: int) -> str:
    if 0xDC80 <= code <= 0xDCFF:
        return f"text is not valid UTF-8 (byte 0x{code - 0xDC00:02x}, or a \\u{code:04x} escape)"
    return f"text holds a lone UTF-16 surrogate (\\u{code:04x} escape)"


def _checked(value: Any, raw: str, position: int, label: str) -> Any:
    """`value`, or the error for a row whose text cannot be stored as UTF-8."""
    if _SURROGATE_HINT.search(raw):
        problem = text_problem(value)
        if problem:
            return JsonRowError(f"{label}: {problem}", position)
    return value


def _iter_jsonl(path: Path, max_chars: int) -> Iterator[Any]:
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
        number, offset = 0, 0
        while line := handle.readline(max_chars + 1):
            number += 1
            start, offset = offset, offset + len(line)
            if len(line) > max_chars and not line.endswith("\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith("\n"):
                    offset += len(rest)
                offset += len(rest)
                yield JsonRowError(
                    f"{path.name} line {number}: longer than limit "
                    f"max_json_row_chars={max_chars:,}; skipped unparsed",
                    start,
                )
                continue
            if not line.strip():
                continue
            try:
                yield _checked(json.loads(line), line, start, f"{path.name} line {number}")
            except json.JSONDecodeError as exc:
                yield JsonRowError(f"invalid JSON on line {number}: {exc}", number)
            except RecursionError:
                yield JsonRowError(f"{path.name} line {number}: JSON nested too deeply", start)


class _SkipRow(Exception):
    """This row cannot be parsed, but its end can be found: skip it."""


def _iter_json_array(path: Path, chunk_chars: int, max_chars: int) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
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
            start = stream.offset
            try:
                value, raw = stream.decode(decoder, max_chars)
            except _SkipRow as exc:
                stream.skip_value()
                yield JsonRowError(f"{path.name} row at char {start}: {exc}", start)
                continue
            yield _checked(value, raw, start, f"{path.name} row at char {start}")


_STRING_STOP = re.compile(r'["\\]')
_STRUCTURE = re.compile(r'["\[\]{},]')


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

    def decode(self, decoder: json.JSONDecoder, max_chars: int) -> tuple[Any, str]:
        """The value at `pos` and its raw text; `_SkipRow` when it is longer than
        `max_chars` or nests deeper than the parser can follow."""
        while True:
            try:
                value, end = decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.buffer) - self.pos > max_chars:
                    raise _SkipRow(
                        f"longer than limit max_json_row_chars={max_chars:,}; skipped unparsed"
                    ) from exc
                if self._more():
                    continue
                at = self.consumed + exc.pos
                raise JsonRowError(f"invalid JSON at char {at}: {exc.msg}", at) from exc
            except RecursionError as exc:
                raise _SkipRow("JSON nested too deeply; skipped unparsed") from exc
            if end == len(self.buffer) and self._more():
                continue  # a number or literal may continue in the next chunk
            if end - self.pos > max_chars:
                raise _SkipRow(f"longer than limit max_json_row_chars={max_chars:,}")
            raw = self.buffer[self.pos : end]
            self.pos = end
            return value, raw

    def skip_value(self) -> None:
        """Move past the JSON value at `pos` without parsing it, dropping what it passes
        (strings, brackets and commas are all that matter to find its end)."""
        depth, in_string = 0, False
        while True:
            if self.pos >= len(self.buffer) and not self._more():
                raise JsonRowError("unexpected end of JSON", self.offset)
            if in_string:
                match = _STRING_STOP.search(self.buffer, self.pos)
                if match is None:
                    self.pos = len(self.buffer)
                elif match.group() == "\\":
                    if match.end() >= len(self.buffer):
                        self.pos = match.start()
                        if not self._more():
                            raise JsonRowError("unexpected end of JSON", self.offset)
                    else:
                        self.pos = match.end() + 1
                else:
                    self.pos, in_string = match.end(), False
                    if depth == 0:
                        return
                continue
            match = _STRUCTURE.search(self.buffer, self.pos)
            if match is None:
                self.pos = len(self.buffer)
                continue
            char = match.group()
            if char == '"':
                in_string = True
            elif char in "[{":
                depth += 1
            elif depth == 0:  # "," or "]" after a scalar ends it
                self.pos = match.start()
                return
            elif char in "]}":
                depth -= 1
                if depth == 0:
                    self.pos = match.end()
                    return
            self.pos = match.end()

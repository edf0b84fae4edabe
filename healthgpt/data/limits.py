"""Limits on hostile input, and the one rule that confines a path to its source root.

Every size a file *declares* (pixels in a PNG/JPEG header, voxels in a NIfTI header, rows x
columns x frames x bits of a DICOM) is checked here before anything is allocated, and every
stream that inflates (gzip, deflated DICOM, tar members) is read through a capped counter,
so that a small file cannot make the process allocate what it claims. A refusal is a
`BadInput` whose reason names the limit (`limit max_image_pixels=...`), so the quarantine
table says which knob to turn.

Defaults are generous for real medical data and small enough that one item cannot take the
machine down: beyond each declared size, `max_working_bytes` bounds what decoding one item
holds at its peak, estimated from the declared dimensions times the bytes per value of every
working copy the decoder makes (an unpacked 1-bit DICOM is 8x its packed size; modality LUTs
and normalisation work in float64/float32). At the defaults one item's peak stays near
1 GiB above the interpreter's own footprint. Change one for every run with the environment variable
`HEALTHGPT_LIMIT_<NAME>` (e.g. `HEALTHGPT_LIMIT_MAX_VOLUME_VOXELS=500000000`), or for one run
with `ReaderOptions.extra["limits"] = {"max_image_pixels": ...}` (an ingest asset's run
config `limits`).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import IO, Any

from healthgpt.data.errors import BadInput
from healthgpt.settings import settings

ENV_PREFIX = "HEALTHGPT_LIMIT_"


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what one input item may declare or inflate to."""

    # PNG/JPEG width x height, and DICOM rows x columns (one frame), from the header.
    max_image_pixels: int = 100_000_000
    # NIfTI x * y * z from the header, before any voxel is read, and the grid a resample
    # would produce (256 MiB as float32).
    max_volume_voxels: int = 1 << 26
    # Bytes a compressed stream may inflate to (.nii.gz, a gzip tar member, a deflated
    # DICOM), and bytes a DICOM's pixel data may decode to (rows x columns x frames x
    # samples x bits).
    max_decompressed_bytes: int = 512 << 20
    # A member of a tar archive larger than this is skipped by its header, unread.
    max_tar_member_bytes: int = 512 << 20
    # Estimated bytes decoding one item holds at its peak: declared values x (bytes of each
    # working copy). The bound that keeps memory near 1 GiB whatever a small file declares.
    max_working_bytes: int = 1 << 30
    # Characters of one text field (a question, an answer, a conversation turn, a report).
    max_text_chars: int = 100_000
    # Characters of one row of a JSON array or JSON Lines file; a longer row is skipped
    # unparsed, so memory stays bounded whatever one string holds.
    max_json_row_chars: int = 10_000_000

    @classmethod
    def from_options(cls, extra: Mapping[str, Any] | None = None) -> Limits:
        """Defaults, then `HEALTHGPT_LIMIT_<NAME>` variables, then `extra["limits"]`."""
        values: dict[str, int] = {}
        configured_env = settings().with_prefix(ENV_PREFIX)
        for spec in fields(cls):
            env = configured_env.get(spec.name.upper())
            if env:
                values[spec.name] = _positive(spec.name, env)
        configured = (extra or {}).get("limits") or {}
        unknown = set(configured) - {spec.name for spec in fields(cls)}
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}; known: {_names()}")
        values.update({k: _positive(k, v) for k, v in configured.items()})
        return replace(cls(), **values)


def _names() -> list[str]:
    return [spec.name for spec in fields(Limits)]


def _positive(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"limit {name} must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"limit {name} must be a positive integer, got {value!r}")
    return number


def exceeds(name: str, value: int, limit: int, what: str) -> BadInput:
    """The refusal for a declared size over a limit, naming the limit and how to raise it."""
    return BadInput(f"{what} {value:,} exceeds limit {name}={limit:,}")


def check(name: str, value: int, limit: int, what: str) -> None:
    if value > limit:
        raise exceeds(name, value, limit, what)


def check_working(estimate: int, limits: Limits, what: str) -> None:
    """Refuse an item whose decode would hold more than `max_working_bytes` at its peak
    (`estimate`: declared values times the bytes of every working copy)."""
    check("max_working_bytes", estimate, limits.max_working_bytes, f"{what} needs about (bytes)")


# ------------------------------------------------------------------------- confinement


def confine(root: Path, relative: str | os.PathLike[str], base: Path | None = None) -> Path:
    """`base / relative` with symlinks resolved, refused unless it stays inside `root`.

    The one confinement rule of every reader: a metadata path with `../`, an absolute path,
    or a symlink (anywhere along the path) that leads out of the source root is refused.
    A path the file system cannot take (a symlink loop, a NUL byte, a name longer than the
    file system allows) is refused here too, so that no caller, chunk keying included, sees
    the raw `RuntimeError`/`ValueError`/`OSError` of a later stat. The reason names the
    problem, not the path (a 5000-character name is not a useful quarantine reason).
    """
    root_resolved = Path(root).resolve()
    try:
        candidate = (Path(base or root) / relative).resolve()
        candidate.exists()  # raises for a name the file system refuses (ENAMETOOLONG)
    except RuntimeError:  # a symlink loop (Python < 3.13)
        raise BadInput("path cannot be resolved: symlink loop") from None
    except ValueError:  # an embedded NUL byte
        raise BadInput("path cannot be resolved: it holds a NUL byte") from None
    except OSError as exc:
        raise BadInput(f"path cannot be resolved: {exc.strerror or type(exc).__name__}") from None
    if candidate != root_resolved and root_resolved not in candidate.parents:
        shown = os.fsdecode(relative) if not isinstance(relative, str) else relative
        raise BadInput(f"path {shown!r} points outside the source root")
    return candidate


class Confinement:
    """`confine` for one source root, remembering the resolved root and each directory
    resolved so far: a reader names thousands of files in a few folders, and resolving every
    component of every path was a tenth of its own time. Held by one reader, so for one run.

    A plain file name under a directory already resolved inside the root is that directory
    plus the name, unless the name is a symlink; anything else goes through `confine`.
    """

    def __init__(self, root: Path) -> None:
        self.given = Path(root)
        self.root = self.given.resolve()
        self._dirs: dict[Path, Path] = {}

    def __call__(self, relative: str | os.PathLike[str], base: Path | None = None) -> Path:
        name = os.fspath(relative)
        plain = isinstance(name, str) and name not in ("", ".", "..")
        if base is not None and plain and not {"/", os.sep, "\x00"} & set(name):
            candidate = self.folder(base) / name
            try:
                if not candidate.is_symlink():
                    return candidate
            except OSError:
                pass  # a name the file system refuses: `confine` gives the reason
        return confine(self.given, relative, base)

    def folder(self, base: Path) -> Path:
        """Directory `base` (a path like the root: absolute, or relative to the working
        directory) resolved and confined to the root, remembered."""
        folder = self._dirs.get(base)
        if folder is None:
            folder = self._dirs[base] = confine(self.given, Path(base).absolute())
        return folder


def confined_files(root: Path, paths: Iterator[Path]) -> Iterator[tuple[Path, str | None]]:
    """Each listed file with None, or with the reason it may not be read: a symlink that
    leads out of the root (`rglob` follows file symlinks)."""
    root_resolved = Path(root).resolve()
    for path in paths:
        resolved = path.resolve()
        if resolved != root_resolved and root_resolved not in resolved.parents:
            yield path, "symlink points outside the source root"
        else:
            yield path, None


def undecodable_name(rel: str) -> str | None:
    """Why a relative path cannot be used as text (a non-UTF-8 file name), or None.

    Python hands such names over with surrogate escapes; encoding them later fails far from
    the listing. The reason says where the bad byte is, not the name itself (folder names
    can carry patient names)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = rel.encode("utf-8", "surrogateescape")
        bad = raw[len(rel[: exc.start].encode("utf-8", "surrogateescape"))]
        return f"file name is not valid UTF-8 (byte 0x{bad:02x} at character {exc.start})"
    return None


def printable_name(rel: str) -> str:
    """A relative path as text that always encodes: bad bytes shown as `\\xNN`."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# ------------------------------------------------------------------------- streams


def read_capped(
    stream: IO[bytes], limit: int, what: str, name: str, initial: bytes = b""
) -> bytearray:
    """Read a stream whole (after `initial`, bytes already read from it), refusing once it
    passes `limit` bytes: at most `limit` bytes are ever held, in one growing buffer (no list
    of blocks joined into a second copy)."""
    buffer = bytearray(initial)
    while block := stream.read(min(1 << 20, limit + 1 - len(buffer)) or 1):
        if len(buffer) + len(block) > limit:
            raise exceeds(name, len(buffer) + len(block), limit, f"{what} inflates to more than")
        buffer += block
    return buffer


def count_inflated(stream: IO[bytes], limit: int, what: str, *, wbits: int) -> int:
    """How many bytes a compressed stream inflates to, counted without keeping them;
    refused as soon as the count passes `limit`."""
    decompressor = zlib.decompressobj(wbits)
    total = 0
    while chunk := stream.read(1 << 16):
        pending = chunk
        while pending:
            total += len(decompressor.decompress(pending, 1 << 20))
            if total > limit:
                raise exceeds(
                    "max_decompressed_bytes", total, limit, f"{what} inflates to more than"
                )
            pending = decompressor.unconsumed_tail
            if decompressor.eof:
                return total
    return total

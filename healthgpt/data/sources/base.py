"""The contract every source reader follows.

A reader walks the official on-disk layout of one public source and yields one `Outcome` per
*input item* (a QA row, a DICOM file, a volume, a pair of volumes). An outcome holds the
records that item produced, or the reason it was quarantined. Because every input item yields
exactly one outcome, counts reconcile by construction: items = accepted + quarantined.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from healthgpt.data.decode.deid import salt_for_source, warn_if_public
from healthgpt.data.errors import BadInput, LayoutError
from healthgpt.data.json_rows import text_problem
from healthgpt.data.limits import Confinement
from healthgpt.data.options import ReaderOptions
from healthgpt.data.schema import Quarantined
from healthgpt.data.sources.chunks import chunk_of
from healthgpt.data.sources.fingerprint import chunk_fingerprints

# Files that hold one item's data (or part of it), as opposed to listings and metadata that
# many items share. Used by the default `SourceReader.chunk_key`.
ITEM_FILE_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz", ".mha", ".mhd",
    ".nrrd",
)  # fmt: skip


@dataclass
class Outcome:
    """What one input item became: records, or a quarantine reason.

    `elsewhere` marks an item of another chunk when the reader reads one chunk only: it is
    not this run's item, so it is neither a record nor quarantined here. `chunk_checked`
    says the reader already placed the item in this chunk (by its key, before decoding).
    """

    item: str
    records: list[dict[str, Any]]
    quarantined: Quarantined | None = None
    elsewhere: bool = False
    chunk_checked: bool = False

    @classmethod
    def reject(cls, item: str, reason: str, rel_path: str | None = None) -> Outcome:
        return cls(item=item, records=[], quarantined=Quarantined(item, reason, rel_path))


class SourceReader(ABC):
    """Base class: subclasses set `name` and `expected_layout` and implement `items`."""

    name: ClassVar[str]
    expected_layout: ClassVar[str]
    # The `options.extra` keys this reader reads (beside `limits`, which every reader takes):
    # a registry file naming another key is refused when the registry loads
    # (`check_options`), so a typo fails at load rather than being silently ignored.
    extra_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, root: str | Path, options: ReaderOptions | None = None) -> None:
        self.root = Path(root)
        self.options = options or ReaderOptions()
        if self.options.deid_salt is None:
            self.options = replace(self.options, deid_salt=salt_for_source(self.root))
        else:
            warn_if_public(self.root, self.options.deid_salt)
        # Input rows left out on purpose by configuration (another language, a lateral view),
        # counted by reason: they are not items, so they are neither records nor quarantined,
        # but the ingest summary reports them so nothing disappears without a trace.
        self.skipped: Counter[str] = Counter()

    @classmethod
    def check_options(cls, options: ReaderOptions) -> None:
        """Refuse options this reader cannot use, before any data is read (the registry
        calls it when it loads): unknown `extra` keys; readers with extra keys whose
        values have a fixed set of choices check them here too. Raises ValueError."""
        unknown = set(options.extra) - cls.extra_keys - {"limits"}
        if unknown:
            known = ", ".join(sorted(cls.extra_keys | {"limits"}))
            raise ValueError(f"unknown extra keys {sorted(unknown)} for {cls.name}; known: {known}")

    def validate_layout(self) -> None:
        """Fail fast, naming the expected layout, when the root is missing or wrong."""
        if not self.root.is_dir():
            raise LayoutError(self._layout_message(f"source root {self.root} does not exist"))
        problem = self.layout_problem()
        if problem:
            raise LayoutError(self._layout_message(problem))

    def layout_problem(self) -> str | None:
        """Return a description of what is missing, or None when the layout looks right."""
        return None

    def _layout_message(self, problem: str) -> str:
        return f"{self.name}: {problem}. Expected layout:\n{self.expected_layout}"

    @abstractmethod
    def items(self) -> Iterator[Outcome]:
        """Yield one outcome per input item, in a deterministic order."""

    # --- chunks: which items this run reads when options.chunk is set ---------------------

    def chunk_key(self, rel_path: str) -> str | None:
        """The stable key of the item unit a file belongs to, or None for a shared file.

        The same function places an item (by its main file) and a file (for the per-chunk
        fingerprint), so a changed file changes the data version of exactly the chunk whose
        items read it; shared files (listings, metadata tables) belong to every chunk. By
        default an image or volume file is its own unit and everything else is shared;
        readers whose items span several files (a study folder, a case folder) override it.
        """
        return rel_path if rel_path.lower().endswith(ITEM_FILE_SUFFIXES) else None

    def listing_rows(self, rel_path: str, path: Path) -> Iterator[tuple[str | None, bytes]] | None:
        """For a shared file the reader can split by item (a metadata table), its rows as
        (chunk key or None, row bytes), so that a chunk's data version follows only its own
        rows: adding studies to MIMIC-CXR's tables then rebuilds the chunks they land in,
        not all. None (the default): the file is shared by every chunk as a whole."""
        return None

    def chunk_versions(self, n_chunks: int, content: bool = False) -> list[str]:
        """The data version of each chunk of this source (`fingerprint.chunk_fingerprints`)."""
        return chunk_fingerprints(self.root, self.chunk_key, n_chunks, content, self.listing_rows)

    def item_key(self, item: str, rel_path: str | None) -> str:
        """The key an item is chunked by: its main file's unit key, else its item name."""
        key = self.chunk_key(rel_path) if rel_path else None
        return key if key is not None else item

    def in_chunk(self, key: str) -> bool:
        if self.options.chunk is None:
            return True
        index, n_chunks = self.options.chunk
        return chunk_of(key, n_chunks) == index

    def reads(self, item: str, rel_path: str | None, key: str | None = None) -> bool:
        """Is the item this run's to read (`guard` builds it)? Always, unless one chunk is read."""
        if self.options.chunk is None:
            return True
        return self.in_chunk(key if key is not None else self.item_key(item, rel_path))

    def guard(
        self,
        item: str,
        rel_path: str | None,
        build: Callable[[], list[dict[str, Any]]],
        key: str | None = None,
    ) -> Outcome:
        """Run `build` for one item of this run's chunk (others are not even decoded); any
        failure becomes a quarantine row with a readable reason (`_outcome_of`).

        `key` overrides the chunk key where `rel_path` is a pseudonym (the real relative
        path must decide the chunk, so that it matches the per-chunk fingerprint).
        """
        if not self.reads(item, rel_path, key):
            return Outcome(item=item, records=[], elsewhere=True)
        outcome = _outcome_of(item, rel_path, build)
        problem = long_text(outcome.records, self.options.limits.max_text_chars)
        problem = problem or unstorable_text(outcome.records)
        if problem:
            outcome = Outcome.reject(item, problem, rel_path)
        outcome.chunk_checked = True
        return outcome

    def owns(self, outcome: Outcome) -> bool:
        """Does this run's chunk hold `outcome`? Outcomes a reader rejected on its own (a bad
        listing row) are placed here, by the same key rule as `guard`."""
        if outcome.elsewhere:
            return False
        if outcome.chunk_checked or self.options.chunk is None:
            return True
        rel_path = outcome.quarantined.rel_path if outcome.quarantined else None
        return self.in_chunk(self.item_key(outcome.item, rel_path))

    def rel(self, path: Path) -> str:
        """Path relative to the source root, in POSIX form."""
        return path.relative_to(self.root).as_posix()

    def listing(self, path: Path) -> Path:
        """A listing or table the layout names (a QA JSON, a metadata table), confined to
        the root like every other path: one that is a link out of it is a `LayoutError`."""
        try:
            return self.safe_path(self.rel(path))
        except BadInput as exc:
            raise LayoutError(self._layout_message(f"{self.rel(path)}: {exc}")) from None

    def safe_path(self, relative: str, base: Path | None = None) -> Path:
        """Resolve a path named by the source's metadata, or a listed file, symlinks
        included; refuse one that leads out of the root (`healthgpt.data.limits.confine`)."""
        return self.confinement(relative, base)

    @functools.cached_property
    def confinement(self) -> Confinement:
        """The root's confinement rule, with the directories it resolved (`.root`: the
        resolved root)."""
        return Confinement(self.root)


def _outcome_of(
    item: str, rel_path: str | None, build: Callable[[], list[dict[str, Any]]]
) -> Outcome:
    """Run `build` for one item; any failure becomes a quarantine row with a readable reason.

    Broad on purpose: on a 300k-image source, one unforeseen decoder error must not stop the
    run. The reason keeps the exception type so unexpected ones stand out in the table.
    """
    try:
        records = build()
    except BadInput as exc:
        return Outcome.reject(item, str(exc), rel_path)
    except Exception as exc:  # noqa: BLE001 - see docstring
        return Outcome.reject(item, f"{type(exc).__name__}: {exc}", rel_path)
    if not records:
        return Outcome.reject(item, "produced no records", rel_path)
    return Outcome(item=item, records=records)


TEXT_FIELDS = ("question", "answer", "text")


def long_text(records: list[dict[str, Any]], max_chars: int) -> str | None:
    """The quarantine reason for records holding a text field over `max_chars`, or None."""
    for record in records:
        fields = [(name, record.get(name)) for name in TEXT_FIELDS]
        fields += [("conversation turn", t.get("value")) for t in record.get("conversations") or []]
        for name, value in fields:
            if isinstance(value, str) and len(value) > max_chars:
                return (
                    f"{name} of {len(value):,} characters exceeds limit "
                    f"max_text_chars={max_chars:,}"
                )
    return None


def unstorable_text(records: list[dict[str, Any]]) -> str | None:
    """The quarantine reason for records holding text that cannot be written as UTF-8 (a
    lone surrogate from a pickle, a JSON escape or a file name), or None. Every reader's
    records pass here before the shard write, which would otherwise fail for the whole run."""
    for record in records:
        problem = text_problem(record)
        if problem:
            field = next(k for k, v in record.items() if text_problem(v))
            return f"{field}: {problem}"
    return None


def meta_json(**fields: Any) -> str:
    """Source-specific fields as a compact, key-sorted JSON object (deterministic bytes)."""
    return json.dumps({k: v for k, v in fields.items() if v is not None}, sort_keys=True)

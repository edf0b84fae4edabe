"""MIMIC-CXR-JPG 2.x (Johnson et al. 2019): 377,110 chest radiographs in 227,835 studies.

Credentialed access (PhysioNet DUA). Official layout:

    mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ViewPosition, Rows, ...
    mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, 14 labels (1.0 / 0.0 / -1.0 / blank)
    files/p<XX>/p<subject_id>/s<study_id>/<dicom_id>.jpg

The free-text reports come from MIMIC-CXR (mimic-cxr-reports.zip) with the same tree,
`files/p<XX>/p<subject_id>/s<study_id>.txt`. They are looked for beside the JPGs, under
`reports/files/`, under `mimic-cxr-reports/files/`, or under the folder named by
`options.extra["reports_root"]` (relative to the source root).

One item per image (metadata row). With `options.frontal_only` (default), rows whose
ViewPosition is not PA or AP are not items: they are counted in `self.skipped` by view
(reported as `skipped_by_config`), not quarantined. A record's text is the report's FINDINGS
and IMPRESSION sections ("FINDINGS: ...\\nIMPRESSION: ..."); other sections (INDICATION,
HISTORY, NOTIFICATION, which name people and times) are dropped. Headings are matched
case-insensitively; a NOTIFICATION written on the IMPRESSION line is cut off it.

De-identification: subject, study and dicom ids become salted pseudonyms
(`options.deid_salt`) in every output column, including `orig_path`, `orig_id` and the
quarantine table; report text goes through `deid.scrub_text` (names after titles, dates,
times, phone numbers, ids and long digit runs, addresses, ages over 89; MIMIC's own `___`
placeholders are kept). ViewPosition leaves only as a defined term ("unknown" otherwise).
The metadata's StudyDate, StudyTime and procedure description are never copied.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthgpt.data.decode.deid import pseudonym, scrub_text, vocabulary_value
from healthgpt.data.decode.imaging import encode_png, load_image_bytes
from healthgpt.data.limits import confine
from healthgpt.data.schema import new_record
from healthgpt.data.sources.base import BadInput, LayoutError, Outcome, SourceReader, meta_json
from healthgpt.data.vocab import normalize_split

PREFIX = "mimic-cxr-2.0.0"
METADATA = f"{PREFIX}-metadata.csv.gz"
SPLIT = f"{PREFIX}-split.csv.gz"
CHEXPERT = f"{PREFIX}-chexpert.csv.gz"
FRONTAL_VIEWS = frozenset({"PA", "AP"})
CHEXPERT_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
REPORT_ROOTS = (".", "reports", "mimic-cxr-reports")

# A study folder (its JPGs) and its report `s<study>.txt` are one chunk unit, wherever the
# report tree was unzipped.
_STUDY = re.compile(r"(?:^|/)(files/p\d+/p\d+/s\d+)(?:\.txt$|/|$)")
_HEADING = re.compile(r"^[ \t]*([A-Za-z][A-Za-z &/,()\-]{1,60}):", re.MULTILINE)
# Section names MIMIC-CXR reports use; other lower-case `word:` lines are report content.
_SECTION_NAMES = frozenset(
    {
        "FINDINGS", "FINDING", "IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS",
        "INDICATION", "INDICATIONS", "HISTORY", "CLINICAL HISTORY", "CLINICAL INFORMATION",
        "REASON FOR EXAM", "REASON FOR EXAMINATION", "COMPARISON", "COMPARISONS",
        "TECHNIQUE", "EXAMINATION", "EXAM", "PROCEDURE", "NOTIFICATION", "RECOMMENDATION",
        "RECOMMENDATIONS", "WET READ", "ADDENDUM", "FINAL REPORT", "STUDY", "TYPE OF EXAM",
    }
)  # fmt: skip
_IMPRESSION_HEADINGS = frozenset({"IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS"})


def parse_report(text: str) -> dict[str, str]:
    """The FINDINGS and IMPRESSION sections of a report, whitespace-collapsed.

    A section runs from its `HEADING:` at the start of a line to the next heading; headings
    are upper case, or a known section name in any case. Keys are present only for sections
    with text.
    """
    sections: dict[str, list[str]] = {"findings": [], "impression": []}
    matches = [m for m in _HEADING.finditer(text) if _is_heading(m.group(1))]
    for index, match in enumerate(matches):
        heading = " ".join(match.group(1).split()).upper()
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = " ".join(text[match.end() : end].split())
        if heading.startswith("FINDING"):
            sections["findings"].append(body)
        elif heading in _IMPRESSION_HEADINGS:
            sections["impression"].append(body)
    return {key: " ".join(parts) for key, parts in sections.items() if any(parts)}


def _is_heading(name: str) -> bool:
    heading = " ".join(name.split())
    return heading.isupper() or heading.upper() in _SECTION_NAMES


def report_text(sections: dict[str, str]) -> str:
    """FINDINGS and IMPRESSION as one text, each scrubbed by `deid.scrub_text`."""
    parts = []
    for key, label in (("findings", "FINDINGS"), ("impression", "IMPRESSION")):
        body = scrub_text(sections.get(key, ""))
        if body:
            parts.append(f"{label}: {body}")
    return "\n".join(parts)


TABLES = (METADATA, SPLIT, CHEXPERT)


def _study_key(subject: str | None, study: str | None) -> str | None:
    """The chunk key of a study: its folder, `files/p<XX>/p<subject>/s<study>`."""
    subject, study = (subject or "").strip(), (study or "").strip()
    return f"files/p{subject[:2]}/p{subject}/s{study}" if subject and study else None


def _row_bytes(row: dict[str, str]) -> bytes:
    return "\x1f".join(f"{k}={v}" for k, v in row.items()).encode()


# The columns each table must have; a table without one is a layout error, not an empty run.
REQUIRED_COLUMNS = {
    METADATA: ("dicom_id", "subject_id", "study_id", "ViewPosition"),
    SPLIT: ("dicom_id", "split"),
    CHEXPERT: ("subject_id", "study_id"),
}
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_TABLE_ERRORS = (OSError, EOFError, zlib.error, csv.Error)


class CsvRowError(ValueError):
    """One row of a table that cannot be used (its bytes are not UTF-8): a quarantine row."""

    def __init__(self, file: str, line: int, problem: str) -> None:
        super().__init__(f"{file} line {line}: {problem}")
        self.file, self.item = file, f"{file} line {line}"


def _open_table(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    # surrogateescape: a byte that is not UTF-8 fails its own row, not the whole table
    return opener(path, "rt", encoding="utf-8", errors="surrogateescape", newline="")


def _table_error(path: Path, exc: BaseException, line: int | None = None) -> LayoutError:
    where = f" at line {line}" if line else ""
    if isinstance(exc, gzip.BadGzipFile) or (
        isinstance(exc, OSError) and "gzip" in str(exc).lower()
    ):
        return LayoutError(f"{path.name} is not a gzip file ({exc})")
    return LayoutError(f"{path.name}: unreadable table{where}: {type(exc).__name__}: {exc}")


def table_columns(path: Path) -> list[str]:
    """A table's header row; a file that is not a readable CSV (or gzip) is a `LayoutError`."""
    try:
        with _open_table(path) as handle:
            return next(csv.reader(handle), [])
    except _TABLE_ERRORS as exc:
        raise _table_error(path, exc) from exc


def _rows(path: Path) -> Iterator[dict[str, str] | CsvRowError]:
    """The rows of a table; a row holding bytes that are not UTF-8 comes as a `CsvRowError`
    in its place, and a damaged file (bad gzip, a CSV error) is a `LayoutError` naming the
    file and the line."""
    reader = None
    try:
        with _open_table(path) as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                line = reader.line_num
                values = [v for v in row.values() if isinstance(v, str)]
                bad = next((m for v in values if (m := _NOT_UTF8.search(v))), None)
                if bad is not None:
                    byte = ord(bad.group()) - 0xDC00
                    yield CsvRowError(path.name, line, f"not valid UTF-8 (byte 0x{byte:02x})")
                    continue
                yield row
    except _TABLE_ERRORS as exc:
        # the csv reader counts the lines read, the failing one included (the header is 1);
        # DictReader.line_num stays at the last good row
        raise _table_error(path, exc, reader.reader.line_num if reader else None) from exc


def _label(value: str | None) -> int | None:
    """CheXpert cells: 1.0 positive, 0.0 negative, -1.0 uncertain, blank not mentioned."""
    text = (value or "").strip()
    return int(float(text)) if text else None


class MimicCxrReader(SourceReader):
    name = "mimic_cxr"
    extra_keys = frozenset({"reports_root"})
    expected_layout = f"""\
<root>/                                  (MIMIC-CXR-JPG 2.x, PhysioNet credentialed access)
  {METADATA}
  {SPLIT}
  {CHEXPERT}        (optional)
  files/p<XX>/p<subject_id>/s<study_id>/<dicom_id>.jpg
  files/p<XX>/p<subject_id>/s<study_id>.txt   (reports; or under reports/files/, or under
                                               options.extra["reports_root"])"""

    def _csv(self, name: str) -> Path | None:
        for candidate in (self.root / name, self.root / name.removesuffix(".gz")):
            if candidate.is_file():
                return self.listing(candidate)
        return None

    def layout_problem(self) -> str | None:
        missing = [n for n in (METADATA, SPLIT) if self._csv(n) is None]
        for name, required in REQUIRED_COLUMNS.items():
            path = self._csv(name)
            if path is None:
                continue
            columns = table_columns(path)
            absent = [c for c in required if c not in columns]
            if absent:
                return f"{path.name} has no column {', '.join(map(repr, absent))}"
        if not (self.root / "files").is_dir():
            missing.append("files/")
        configured = self.options.extra.get("reports_root")
        if configured and not (self.root / configured / "files").is_dir():
            missing.append(f"{configured}/files/ (options.extra['reports_root'])")
        return f"missing {', '.join(missing)}" if missing else None

    def _report_roots(self) -> list[Path]:
        """Where report trees may start: the configured folder (relative to the root, or
        absolute), else beside the JPGs and the usual unzip locations."""
        configured = self.options.extra.get("reports_root")
        names = [configured] if configured else list(REPORT_ROOTS)
        return [self.root / name for name in names]

    def _pseudonym(self, kind: str, value: str) -> str:
        return pseudonym(value, self.options.deid_salt, prefix=kind)

    def chunk_key(self, rel_path: str) -> str | None:
        match = _STUDY.search(rel_path)
        return match[1] if match else None

    def listing_rows(self, rel_path: str, path: Path) -> Iterator[tuple[str | None, bytes]] | None:
        """The metadata, split and CheXpert tables, row by row, keyed by each row's study."""
        if rel_path.removesuffix(".gz") not in {n.removesuffix(".gz") for n in TABLES}:
            return None
        return (
            (None, str(row).encode("utf-8", "surrogateescape"))
            if isinstance(row, CsvRowError)
            else (_study_key(row.get("subject_id"), row.get("study_id")), _row_bytes(row))
            for row in _rows(path)
        )

    def items(self) -> Iterator[Outcome]:
        splits = {}
        for row in _rows(self._csv(SPLIT)):
            if isinstance(row, CsvRowError):
                yield Outcome.reject(row.item, str(row), row.file)
                continue
            splits[row["dicom_id"]] = row["split"]
        chexpert_path = self._csv(CHEXPERT)
        labels = {}
        if chexpert_path is not None:
            for row in _rows(chexpert_path):
                if isinstance(row, CsvRowError):
                    yield Outcome.reject(row.item, str(row), row.file)
                    continue
                values = {name: _label(row.get(name)) for name in CHEXPERT_LABELS}
                labels[(row.get("subject_id"), row.get("study_id"))] = {
                    k: v for k, v in values.items() if v is not None
                }
        report_roots = self._report_roots()
        for row in _rows(self._csv(METADATA)):
            if isinstance(row, CsvRowError):
                yield Outcome.reject(row.item, str(row), row.file)
                continue
            view = vocabulary_value("ViewPosition", row.get("ViewPosition")) or ""
            if self.options.frontal_only and view not in FRONTAL_VIEWS:
                self.skipped[f"view {view or 'missing'} (frontal_only)"] += 1
                continue
            yield self._outcome(row, view, splits, labels, report_roots)

    def _outcome(
        self,
        row: dict[str, str],
        view: str,
        splits: dict[str, str],
        labels: dict[tuple[str, str], dict[str, int]],
        report_roots: list[Path],
    ) -> Outcome:
        raw = {k: (row.get(k) or "").strip() for k in ("subject_id", "study_id", "dicom_id")}
        ids = {
            "subject_id": self._pseudonym("subj", raw["subject_id"]),
            "study_id": self._pseudonym("study", raw["study_id"]),
            "dicom_id": self._pseudonym("img", raw["dicom_id"]),
        }
        orig_path = f"files/{ids['subject_id']}/{ids['study_id']}/{ids['dicom_id']}.jpg"

        def build() -> list[dict[str, Any]]:
            if not all(raw.values()):
                raise BadInput("metadata row lacks subject_id, study_id or dicom_id")
            if raw["dicom_id"] not in splits:
                raise BadInput("image not listed in the split file")
            subject, study = raw["subject_id"], raw["study_id"]
            study_dir = Path("files", f"p{subject[:2]}", f"p{subject}", f"s{study}")
            sections = self._report(study_dir.with_suffix(".txt"), report_roots)
            image = self.safe_path((study_dir / f"{raw['dicom_id']}.jpg").as_posix())
            png = self._image(image, ids["dicom_id"])
            return [
                new_record(
                    source=self.name,
                    orig_id=ids["dicom_id"],
                    split=normalize_split(splits[raw["dicom_id"]]),
                    kind="report",
                    modality="X-Ray",
                    image=png,
                    body_part="chest",
                    subject_id=ids["subject_id"],
                    text=report_text(sections),
                    orig_path=orig_path,
                    meta=meta_json(
                        view=view or None,
                        study=ids["study_id"],
                        rows=_int(row.get("Rows")),
                        columns=_int(row.get("Columns")),
                        chexpert=labels.get((subject, study)),
                    ),
                )
            ]

        key = _study_key(raw["subject_id"], raw["study_id"]) or ids["dicom_id"]
        outcome = self.guard(ids["dicom_id"], orig_path, build, key=key)
        if outcome.quarantined is not None:
            reason = outcome.quarantined.reason
            for name, value in raw.items():
                if value:
                    reason = reason.replace(value, ids[name])
            rejected = Outcome.reject(ids["dicom_id"], reason, orig_path)
            rejected.chunk_checked = True
            return rejected
        return outcome

    def _report(self, relative: Path, roots: list[Path]) -> dict[str, str]:
        limit = self.options.limits.max_text_chars
        # A report tree the operator configured may lie anywhere; the others are confined to
        # the source root. Either way the study's path must stay inside its tree.
        configured = bool(self.options.extra.get("reports_root"))
        for root in roots:
            path = confine(root if configured else self.root, relative.as_posix(), root)
            if path.is_file():
                size = path.stat().st_size
                if size > 4 * limit:  # UTF-8: at most 4 bytes a character
                    raise BadInput(
                        f"report file of {size:,} bytes exceeds limit max_text_chars={limit:,}"
                    )
                text = path.read_text(encoding="utf-8", errors="replace")
                if len(text) > limit:  # before any scrubbing: its cost grows with the text
                    raise BadInput(
                        f"report of {len(text):,} characters exceeds limit max_text_chars={limit:,}"
                    )
                sections = parse_report(text)
                if not sections:
                    raise BadInput("report has no FINDINGS or IMPRESSION section")
                return sections
        raise BadInput("report file missing for the study")

    def _image(self, path: Path, name: str) -> bytes:
        """Decode the JPEG; error messages name the pseudonym, never the file."""
        if not path.is_file():
            raise BadInput("image file missing")
        size, limit = path.stat().st_size, self.options.limits.max_decompressed_bytes
        if size > limit:
            raise BadInput(f"image file of {size:,} bytes exceeds limit max_decompressed_bytes")
        data = path.read_bytes()
        if not data:
            raise BadInput("image file is empty (0 bytes)")
        image = load_image_bytes(data, name, self.options.limits)
        return encode_png(image, self.options.image_size, self.options.png_compress_level)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value else None
    except ValueError:
        return None

"""Any tree of DICOM files: a hospital PACS export, a CD, a research archive.

Layout: DICOM files at any depth, named `*.dcm` or without extension (as PACS exports and
DICOMDIR-style media write them). Item = one file; every regular file is an item, except
`DICOMDIR` index files, so a stray report PDF or a non-image DICOM ends in the quarantine
table with its reason instead of disappearing. Records = one kind "image" per frame (every
`options.slice_stride`-th frame of a multi-frame file), decoded by `healthgpt.data.decode.dicom`.

De-identification: export folders and file names often carry patient names and MRNs, so
`orig_path` and `orig_id` are salted pseudonyms of the relative path, `subject_id` is a
pseudonym of PatientID, and `meta` holds only allow-listed technical header values.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthgpt.data.decode.deid import pseudonym
from healthgpt.data.decode.dicom import read_dicom
from healthgpt.data.decode.imaging import encode_png
from healthgpt.data.limits import confined_files, printable_name, undecodable_name
from healthgpt.data.schema import new_record
from healthgpt.data.sources.base import BadInput, Outcome, SourceReader, meta_json

IGNORED_NAMES = frozenset({"DICOMDIR"})


class DicomFolderReader(SourceReader):
    name = "dicom_folder"
    extra_keys = frozenset({"dicom_ct_window"})
    expected_layout = """\
<root>/
  **/<anything>.dcm  or  **/<name without extension>   (DICOM files at any depth)
  DICOMDIR                                            (optional; ignored)
Every other file is quarantined as not DICOM."""

    def layout_problem(self) -> str | None:
        if not any(self._files()):
            return "the folder contains no files"
        return None

    def _files(self) -> Iterator[Path]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and path.name.upper() not in IGNORED_NAMES:
                yield path

    def chunk_key(self, rel_path: str) -> str | None:
        """Every file is an item (DICOM files often have no extension)."""
        return None if rel_path.rsplit("/", 1)[-1].upper() in IGNORED_NAMES else rel_path

    def items(self) -> Iterator[Outcome]:
        for path, refused in confined_files(self.root, self._files()):
            rel = self.rel(path)  # may hold surrogate escapes: keys hash its bytes
            refused = undecodable_name(rel) or refused
            token = pseudonym(printable_name(rel), self.options.deid_salt, prefix="file")
            build = (
                (lambda r=refused: _refuse(r))
                if refused
                else (lambda p=path, t=token: self._records(p, t))
            )
            yield self.guard(token, token, build, key=rel)

    def _records(self, path: Path, token: str) -> list[dict[str, Any]]:
        image = read_dicom(path, self.options)
        size, level = self.options.image_size, self.options.png_compress_level
        stride = max(1, self.options.slice_stride)
        records = []
        for index in range(0, len(image.frames), stride):
            records.append(
                new_record(
                    source=self.name,
                    orig_id=token,
                    split="train",
                    kind="image",
                    modality=image.modality,
                    image=encode_png(image.frames[index], size, level),
                    id_parts=(index,),
                    body_part=image.body_part,
                    subject_id=image.subject_id,
                    orig_path=token,
                    meta=meta_json(frame_index=index, **image.facts),
                )
            )
        return records


def _refuse(reason: str) -> list[dict[str, Any]]:
    raise BadInput(reason)

"""Any tree of NIfTI volumes: a BIDS dataset, dcm2niix output, a lab's research archive.

Item = one `.nii` / `.nii.gz` file; other files (sidecar JSON, TSV, README) are not items.
Records = one kind "image" per kept slice (rules in `healthgpt.data.decode.nifti`); 4D files use
their `options.extra["volume_index"]`-th volume (default 0).

Modality: a BIDS sidecar (`<stem>.json`, key `Modality`, e.g. "MR", "CT") wins, then
`options.extra["modality"]` (default "MRI"). Body part: sidecar `BodyPart` /
`BodyPartExamined`, then `options.extra["body_part"]`. Nothing else is read from sidecars:
dcm2niix copies PHI (InstitutionName, dates) into them when the DICOMs were not anonymized.

De-identification: `orig_path`/`orig_id` are salted pseudonyms of the relative path (folder
names can carry patient names); `subject_id` is a pseudonym of the BIDS `sub-<label>` when
the path has one, else of the path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthgpt.data.decode.deid import pseudonym
from healthgpt.data.decode.dicom import normalize_body_part
from healthgpt.data.decode.nifti import is_nifti, load_volume, nifti_stem
from healthgpt.data.limits import confine, confined_files, printable_name, undecodable_name
from healthgpt.data.sources.base import BadInput, Outcome, SourceReader
from healthgpt.data.sources.volumes import image_slice_records, prepare
from healthgpt.data.vocab import normalize_modality

BIDS_SUBJECT = re.compile(r"(?:^|/)(sub-[A-Za-z0-9]+)(?:/|_)")


class NiftiFolderReader(SourceReader):
    name = "nifti_folder"
    extra_keys = frozenset({"modality", "body_part", "volume_index", "spacing"})
    expected_layout = """\
<root>/
  **/<name>.nii.gz  or  **/<name>.nii      (3D or 4D volumes at any depth)
  **/<name>.json                           (optional BIDS sidecar: Modality, BodyPart)"""

    def layout_problem(self) -> str | None:
        if not any(True for _ in self._volumes()):
            return "no .nii or .nii.gz file found"
        return None

    def _volumes(self) -> Iterator[Path]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and is_nifti(path):
                yield path

    def chunk_key(self, rel_path: str) -> str | None:
        """A BIDS sidecar belongs to the volume beside it."""
        if rel_path.endswith(".json"):
            stem = rel_path.removesuffix(".json")
            volumes = (stem + suffix for suffix in (".nii.gz", ".nii"))
            return next((v for v in volumes if (self.root / v).is_file()), None)
        return rel_path if is_nifti(rel_path) else None

    def items(self) -> Iterator[Outcome]:
        for path, refused in confined_files(self.root, self._volumes()):
            rel = self.rel(path)  # may hold surrogate escapes: keys hash its bytes
            refused = undecodable_name(rel) or refused
            token = pseudonym(printable_name(rel), self.options.deid_salt, prefix="file")
            yield self.guard(
                token,
                token,
                lambda p=path, r=rel, t=token, why=refused: self._records(p, r, t, why),
                key=rel,
            )

    def _records(
        self, path: Path, rel: str, token: str, refused: str | None = None
    ) -> list[dict[str, Any]]:
        if refused:
            raise BadInput(refused)
        sidecar = _sidecar(self.root, path)
        modality = normalize_modality(
            sidecar.get("Modality") or self.options.extra.get("modality", "MRI")
        )
        body_part = normalize_body_part(
            sidecar.get("BodyPart")
            or sidecar.get("BodyPartExamined")
            or self.options.extra.get("body_part")
        )
        subject = BIDS_SUBJECT.search(rel)
        volume = load_volume(
            path, int(self.options.extra.get("volume_index", 0)), limits=self.options.limits
        )
        return image_slice_records(
            prepare(volume, self.options),
            source=self.name,
            orig_id=token,
            modality=modality,
            options=self.options,
            subject_id=pseudonym(subject[1] if subject else rel, self.options.deid_salt, "subj"),
            body_part=body_part,
            orig_path=token,
            meta={"sidecar": bool(sidecar)},
        )


def _sidecar(root: Path, path: Path) -> dict[str, Any]:
    """The BIDS JSON next to a volume, or {}; an unreadable sidecar (or one that is a link
    out of the root) is ignored, not fatal."""
    candidate = path.with_name(nifti_stem(path) + ".json")
    if not candidate.is_file():
        return {}
    try:
        candidate = confine(root, candidate.relative_to(root))
        if candidate.stat().st_size > 1 << 20:
            return {}
        data = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, BadInput):
        return {}
    return data if isinstance(data, dict) else {}

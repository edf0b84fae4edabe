"""SynthRAD2023 Task 1 (Thummerer et al. 2023): registered MR/CT pairs for MR-to-CT synthesis.

Official layout (Zenodo training release, Task 1 = MRI -> CT; Task 2, CBCT -> CT, is not
used by HealthGPT):

    Task1/brain/1BA001/{mr,ct,mask}.nii.gz       centres A, B, C; case 1<B|P><A|B|C><NNN>
    Task1/pelvis/1PA001/{mr,ct,mask}.nii.gz
    Task1/<region>/overview/...                  (spreadsheets; ignored)

Item = one case. Records = one kind "pair" per kept slice: image = MR slice, target_image = CT
slice (HU, `options.ct_window`), task "mri_to_ct" (the mixture derives the reverse). The
case's body mask chooses the slices (mask fraction >= `options.min_foreground_fraction`) and
blanks the background (MR 0, CT air), as the challenge evaluates inside the mask only. The
three volumes must share their geometry, or the case is quarantined.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from healthgpt.data.decode.deid import pseudonym
from healthgpt.data.decode.imaging import encode_png
from healthgpt.data.decode.nifti import (
    Volume,
    check_same_geometry,
    display_slice,
    load_volume,
    to_uint8,
    volume_slices,
)
from healthgpt.data.schema import new_record
from healthgpt.data.sources.base import BadInput, Outcome, SourceReader, meta_json
from healthgpt.data.sources.volumes import no_slices_reason, prepare, slice_meta
from healthgpt.data.vocab import normalize_body_part

TASK_DIR = "Task1"
REGIONS = ("brain", "pelvis")
CASE_PATTERN = re.compile(r"^1(?P<region>[BP])(?P<centre>[A-Z])\d{3}$")
VOLUMES = ("mr", "ct", "mask")
AIR_HU = -1000.0


class SynthRadReader(SourceReader):
    name = "synthrad2023"
    extra_keys = frozenset({"spacing"})
    expected_layout = f"""\
<root>/
  {TASK_DIR}/brain/1BA001/mr.nii.gz  ct.nii.gz  mask.nii.gz
  {TASK_DIR}/brain/...               (case ids 1B<centre A|B|C><NNN>)
  {TASK_DIR}/pelvis/1PA001/mr.nii.gz  ct.nii.gz  mask.nii.gz  (case ids 1P<centre><NNN>)
(<root> may also be the {TASK_DIR} folder itself)"""

    @property
    def task_root(self) -> Path:
        nested = self.root / TASK_DIR
        return nested if nested.is_dir() else self.root

    def layout_problem(self) -> str | None:
        if not any((self.task_root / region).is_dir() for region in REGIONS):
            return f"no {TASK_DIR}/brain or {TASK_DIR}/pelvis folder"
        return None

    def chunk_key(self, rel_path: str) -> str | None:
        """A case folder is one item: its files key to the folder."""
        parts = rel_path.split("/")
        for depth, part in enumerate(parts):
            if CASE_PATTERN.match(part):
                return "/".join(parts[: depth + 1])
        return None

    def items(self) -> Iterator[Outcome]:
        for region in REGIONS:
            folder = self.task_root / region
            if not folder.is_dir():
                continue
            for case in sorted(p for p in folder.iterdir() if p.is_dir()):
                if not CASE_PATTERN.match(case.name):
                    continue  # overview/ and other non-case folders
                rel = self.rel(case)
                yield self.guard(
                    f"case {case.name}", rel, lambda c=case, r=region: self._case(c, r)
                )

    def _case(self, case: Path, region: str) -> list[dict[str, Any]]:
        missing = [f"{n}.nii.gz" for n in VOLUMES if not (case / f"{n}.nii.gz").is_file()]
        if missing:
            raise BadInput(f"incomplete case: missing {', '.join(missing)}")
        limits = self.options.limits
        volumes = {
            name: load_volume(self.safe_path(self.rel(case / f"{name}.nii.gz")), limits=limits)
            for name in VOLUMES
        }
        check_same_geometry(volumes)
        mr = prepare(volumes["mr"], self.options)
        ct = prepare(volumes["ct"], self.options)
        mask = prepare(volumes["mask"], self.options, nearest=True).data > 0.5
        return self._pair_records(case, region, mr, ct, mask)

    def _pair_records(
        self, case: Path, region: str, mr: Volume, ct: Volume, mask: np.ndarray
    ) -> list[dict[str, Any]]:
        mr = Volume(np.where(mask, mr.data, 0.0).astype(np.float32), mr.affine)
        ct = Volume(np.where(mask, ct.data, AIR_HU).astype(np.float32), ct.affine)
        ct_pixels = to_uint8(ct, "CT", self.options)
        axis = self.options.slice_axis
        size, level = self.options.image_size, self.options.png_compress_level
        subject = pseudonym(case.name, self.options.deid_salt, prefix="subj")
        records = []
        for index, mr_slice in volume_slices(mr, "MRI", self.options, mask=mask):
            ct_slice = display_slice(ct_pixels, axis, index)
            records.append(
                new_record(
                    source=self.name,
                    orig_id=case.name,
                    split="train",
                    kind="pair",
                    modality="MRI",
                    image=encode_png(mr_slice, size, level),
                    target_image=encode_png(ct_slice, size, level),
                    target_modality="CT",
                    task="mri_to_ct",
                    id_parts=(axis, index),
                    body_part=normalize_body_part(region),
                    subject_id=subject,
                    orig_path=self.rel(case),
                    meta=meta_json(
                        anatomy=region,
                        centre=CASE_PATTERN.match(case.name)["centre"],
                        ct_window_hu=list(self.options.ct_window),
                        **slice_meta(mr, self.options, index),
                    ),
                )
            )
        if not records:
            raise BadInput(no_slices_reason(self.options))
        return records

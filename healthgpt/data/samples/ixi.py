"""IXI sample: the official layout (IXI-T1.tar, IXI-T2.tar, IXI-PD.tar) in miniature.

Real: the T1 volumes are nilearn's MNI152 2009 T1 template (a real average of 152 brains).
Synthetic: T2 and PD are derived from the template's real tissue maps by intensity remapping
(labelled as such in SAMPLE_README.txt); subjects differ by a small intensity scale, and one
is stored in LPS voxel order to exercise reorientation. Bad inputs beside them: a
truncated .nii.gz and an MRA member that the default configuration skips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from healthgpt.data.samples.brain import (
    PD_WEIGHTS,
    T2_WEIGHTS,
    flip_storage,
    load_brain,
    nifti_bytes,
    save_nifti,
    synthetic_contrast,
    truncate_copy,
    write_tar,
)
from healthgpt.data.samples.seal import sealed

SPACING = (3.0, 3.0, 6.0)  # thick slices keep the sample to ~25 axial slices per volume
# (IXI name stem, intensity scale, stored flipped?) per subject
SUBJECTS = (
    ("IXI002-Guys-0828", 1.0, False),
    ("IXI012-HH-1211", 0.9, True),
    ("IXI035-IOP-0873", 1.1, False),
)

README = """\
IXI sample source (built by healthgpt.data.samples.ixi; layout of https://brain-development.org/ixi-dataset/)

REAL:      *-T1.nii.gz   nilearn's MNI152 2009c T1 template, resampled to 3 x 3 x 6 mm,
                         scaled by a per-subject factor (0.9 - 1.1).
SYNTHETIC: *-T2.nii.gz, *-PD.nii.gz  computed from the template's real GM/WM probability maps
                         (CSF = brain - GM - WM) with textbook relative intensities
                         T2 (CSF, GM, WM) = (1.0, 0.55, 0.35), PD = (0.85, 0.75, 0.6).
                         They are NOT acquired T2/PD images.
                         IXI012 is stored in LPS voxel order (x and y reversed) with a
                         matching affine.
                         IXI-MRA.tar holds one MRA member (a copy of the T1): skipped by default.
BAD INPUT: IXI-T1/IXI099-Guys-0999-T1.nii.gz is truncated halfway (quarantined).
Subject ids are IXI-style but invented; they are not IXI participants.
"""


@sealed
def build(dest: Path) -> None:
    """Write the sample under `dest` (deterministic bytes)."""
    dest.mkdir(parents=True, exist_ok=True)
    brain = load_brain(SPACING)
    contrasts = {
        "T1": brain.t1.data,
        "T2": synthetic_contrast(brain, T2_WEIGHTS) * 1000.0,
        "PD": synthetic_contrast(brain, PD_WEIGHTS) * 1000.0,
    }
    tars: dict[str, dict[str, bytes]] = {"T1": {}, "T2": {}, "PD": {}}
    for stem, scale, flipped in SUBJECTS[:2]:
        for sequence, data in contrasts.items():
            volume, affine = _stored(data * scale, brain.affine, flipped)
            tars[sequence][f"{stem}-{sequence}.nii.gz"] = nifti_bytes(volume, affine)
    for sequence, members in tars.items():
        write_tar(dest / f"IXI-{sequence}.tar", members)
    write_tar(
        dest / "IXI-MRA.tar",
        {f"{SUBJECTS[0][0]}-MRA.nii.gz": nifti_bytes(brain.t1.data, brain.affine)},
    )
    # the third subject as already-extracted files, the way many users keep IXI on disk
    stem, scale, flipped = SUBJECTS[2]
    for sequence, data in contrasts.items():
        volume, affine = _stored(data * scale, brain.affine, flipped)
        save_nifti(volume, affine, dest / f"IXI-{sequence}" / f"{stem}-{sequence}.nii.gz")
    truncate_copy(
        nifti_bytes(brain.t1.data, brain.affine), dest / "IXI-T1" / "IXI099-Guys-0999-T1.nii.gz"
    )
    (dest / "SAMPLE_README.txt").write_text(README)


def _stored(data: np.ndarray, affine: np.ndarray, flipped: bool):
    """Flipped subjects are stored LPS (x and y reversed), the DICOM patient-axis order."""
    if not flipped:
        return data, affine
    data, affine = flip_storage(data, affine, axis=0)
    return flip_storage(data, affine, axis=1)

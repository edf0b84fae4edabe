"""SynthRAD2023 Task 1 sample: `Task1/{brain,pelvis}/<case>/{mr,ct,mask}.nii.gz` in miniature.

Real: the brain MR volumes are nilearn's MNI152 2009 T1 template. Synthetic (and labelled so in
SAMPLE_README.txt): every CT (HU per tissue class), the head masks, and the whole pelvis case,
a geometric phantom, since no pelvis MR/CT ships in a PyPI package. One brain case has a CT on
a different grid than its MR, which the reader must quarantine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from healthgpt.data.decode.nifti import Volume, resample
from healthgpt.data.samples.brain import load_brain, save_nifti, synthetic_head_ct
from healthgpt.data.samples.seal import sealed

BRAIN_SPACING = (3.0, 3.0, 6.0)
PELVIS_SHAPE = (64, 48, 16)
PELVIS_SPACING = (6.0, 6.0, 8.0)

README = """\
SynthRAD2023 Task 1 sample source (built by healthgpt.data.samples.synthrad; layout of
https://synthrad2023.grand-challenge.org/ , Zenodo training set)

Task1/brain/1BA001, 1BB002:
  REAL:      mr.nii.gz    nilearn's MNI152 2009c T1 template at 3 x 3 x 6 mm
                          (1BB002: intensity x 0.8, to differ from 1BA001).
  SYNTHETIC: ct.nii.gz    HU from the template's tissue classes: air -1000, CSF 15, GM 40,
                          WM 30, a 6 mm bone shell of +1000 HU and 4 mm of soft tissue (40 HU)
                          built by dilating the brain mask. Not a real CT.
             mask.nii.gz  the head (brain + skull + scalp) mask.
Task1/pelvis/1PA001:
  SYNTHETIC: a geometric phantom (body ellipse of fat and muscle, bladder, pelvic bone ring,
             two femoral heads) with matching MR-like intensities and CT HU. Not a real scan.
Task1/brain/1BC003:
  BAD INPUT: ct.nii.gz is on a 4 x 4 x 6 mm grid, not the MR's 3 x 3 x 6 mm (geometry
             mismatch; the reader quarantines the case).
"""


@sealed
def build(dest: Path) -> None:
    """Write the sample under `dest` (deterministic bytes)."""
    task = dest / "Task1"
    brain = load_brain(BRAIN_SPACING)
    ct, head = synthetic_head_ct(brain)
    for case, scale in (("1BA001", 1.0), ("1BB002", 0.8)):
        _write_case(task / "brain" / case, brain.t1.data * scale, ct, head, brain.affine)
    mismatch = task / "brain" / "1BC003"
    _write_case(mismatch, brain.t1.data, ct, head, brain.affine)
    coarse = resample(Volume(ct, brain.affine), (4.0, 4.0, 6.0))
    save_nifti(coarse.data, coarse.affine, mismatch / "ct.nii.gz")
    mr, ct_pelvis, body = pelvis_phantom()
    affine = np.diag([*PELVIS_SPACING, 1.0])
    affine[:3, 3] = -0.5 * np.asarray(PELVIS_SHAPE) * np.asarray(PELVIS_SPACING)
    _write_case(task / "pelvis" / "1PA001", mr, ct_pelvis, body, affine)
    (dest / "SAMPLE_README.txt").write_text(README)


def _write_case(
    folder: Path, mr: np.ndarray, ct: np.ndarray, mask: np.ndarray, affine: np.ndarray
) -> None:
    save_nifti(mr, affine, folder / "mr.nii.gz")
    save_nifti(ct, affine, folder / "ct.nii.gz")
    save_nifti(mask, affine, folder / "mask.nii.gz", dtype=np.uint8)


def pelvis_phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(MR-like intensities, CT in HU, body mask) of a simple axial pelvis phantom."""
    nx, ny, nz = PELVIS_SHAPE
    x, y = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="ij")
    body = (x / 0.9) ** 2 + (y / 0.75) ** 2 <= 1.0
    muscle = (x / 0.7) ** 2 + (y / 0.55) ** 2 <= 1.0
    bladder = ((x / 0.18) ** 2 + ((y - 0.25) / 0.15) ** 2) <= 1.0
    ring = np.abs(np.hypot(x / 0.55, (y + 0.05) / 0.45) - 1.0) < 0.08
    femurs = (np.hypot(x - 0.45, y + 0.05) < 0.12) | (np.hypot(x + 0.45, y + 0.05) < 0.12)
    bone = ring | femurs
    mr2 = np.zeros((nx, ny), np.float32)
    ct2 = np.full((nx, ny), -1000.0, np.float32)
    for region, mr_value, hu in (
        (body, 900.0, -100.0),  # subcutaneous fat: bright on T1, -100 HU
        (muscle, 400.0, 50.0),
        (bone, 600.0, 700.0),  # marrow-filled bone: intermediate T1, dense on CT
        (bladder, 150.0, 10.0),  # urine: dark on T1, water on CT
    ):
        mr2[region] = mr_value
        ct2[region] = hu
    taper = np.clip(1.0 - np.abs(np.linspace(-1, 1, nz)) ** 4, 0, 1)  # ends of the stack fade
    mr = mr2[..., None] * taper
    ct = np.where(taper > 0.05, ct2[..., None], -1000.0) * np.ones(nz)
    mask = np.repeat(body[..., None], nz, axis=2) & (taper > 0.05)
    return mr, ct, mask

"""The real brain volumes the volume sample sources are made from, plus their tissue maps.

nilearn's wheel ships the MNI152 2009c nonlinear symmetric template (T1, grey-matter and
white-matter probability maps, 197 x 233 x 189 at 1 mm). The samples resample it to a few mm
so that ingesting them takes seconds, and derive clearly labelled synthetic contrasts (T2, PD,
CT) from its tissue classes where no real image of that contrast ships in a package.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from healthgpt.data.decode.nifti import Volume, load_volume, resample

_MNI = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}

# Relative intensities per tissue (CSF, GM, WM) for the synthetic contrasts: the ordering
# textbooks give for a spin-echo brain (T2: CSF brightest; PD: flat, CSF slightly brighter).
T2_WEIGHTS = (1.0, 0.55, 0.35)
PD_WEIGHTS = (0.85, 0.75, 0.6)
# Hounsfield units per class for the synthetic CT.
HU = {"air": -1000.0, "csf": 15.0, "gm": 40.0, "wm": 30.0, "soft": 40.0, "bone": 1000.0}


def mni_path(key: str) -> Path:
    """A template file inside nilearn's installed package data (no download)."""
    import nilearn

    path = Path(nilearn.__file__).parent / "datasets" / "data" / _MNI[key]
    if not path.is_file():
        raise FileNotFoundError(f"nilearn package data missing: {path}")
    return path


@dataclass(frozen=True)
class Brain:
    """The MNI template at one spacing: T1 and tissue probabilities (0..1) on one grid."""

    t1: Volume
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray  # bool

    @property
    def affine(self) -> np.ndarray:
        return self.t1.affine


def load_brain(spacing: tuple[float, float, float]) -> Brain:
    """The template resampled to `spacing` (mm), with CSF as brain minus GM and WM."""
    t1 = resample(load_volume(mni_path("t1")), spacing)
    gm = np.clip(resample(load_volume(mni_path("gm")), spacing).data / 255.0, 0, 1)
    wm = np.clip(resample(load_volume(mni_path("wm")), spacing).data / 255.0, 0, 1)
    brain = t1.data > 0.05 * float(t1.data.max())
    csf = np.where(brain, np.clip(1.0 - gm - wm, 0, 1), 0.0)
    return Brain(t1=t1, gm=gm, wm=wm, csf=csf, brain=brain)


def synthetic_contrast(brain: Brain, weights: tuple[float, float, float]) -> np.ndarray:
    """A synthetic MR contrast: tissue probabilities times per-tissue intensities."""
    csf, gm, wm = weights
    return (brain.csf * csf + brain.gm * gm + brain.wm * wm) * brain.brain


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation with a box of `radius` voxels (SimpleITK, already a dependency)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    return sitk.GetArrayFromImage(sitk.BinaryDilate(image, [radius] * 3)).astype(bool)


def synthetic_head_ct(brain: Brain, skull_mm: float = 6.0, scalp_mm: float = 4.0):
    """(CT in HU, head mask): brain tissue classes inside, a bone shell and scalp outside."""
    spacing = min(brain.t1.spacing)
    skull = dilate(brain.brain, max(1, round(skull_mm / spacing)))
    head = dilate(skull, max(1, round(scalp_mm / spacing)))
    ct = np.full(brain.brain.shape, HU["air"], dtype=np.float32)
    ct[head] = HU["soft"]
    ct[skull & ~brain.brain] = HU["bone"]
    tissue = brain.csf * HU["csf"] + brain.gm * HU["gm"] + brain.wm * HU["wm"]
    ct[brain.brain] = tissue[brain.brain]
    return ct, head


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path, dtype: type = np.int16) -> Path:
    """Write a NIfTI (gzip with a zero timestamp in nibabel, so the bytes are reproducible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.rint(data).astype(dtype) if np.issubdtype(dtype, np.integer) else data
    image = nib.Nifti1Image(array.astype(dtype), affine)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))
    return path


def nifti_bytes(data: np.ndarray, affine: np.ndarray, dtype: type = np.int16) -> bytes:
    """A .nii.gz as bytes (for tar members), reproducibly."""
    array = np.rint(data).astype(dtype) if np.issubdtype(dtype, np.integer) else data
    image = nib.Nifti1Image(array.astype(dtype), affine)
    image.header.set_xyzt_units("mm", "sec")
    raw = image.to_bytes()
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write(raw)
    return buffer.getvalue()


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    """An uncompressed tar with fixed metadata, members in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


def truncate_copy(data: bytes, path: Path, fraction: float = 0.5) -> Path:
    """Write the first `fraction` of `data`: a download that stopped halfway."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    return path


def flip_storage(data: np.ndarray, affine: np.ndarray, axis: int = 0):
    """The same image stored with one voxel axis reversed (e.g. LAS instead of RAS)."""
    flip = np.eye(4)
    flip[axis, axis] = -1.0
    flip[axis, 3] = data.shape[axis] - 1
    return np.flip(data, axis=axis).copy(), affine @ flip

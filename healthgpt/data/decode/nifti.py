"""Volumes: load NIfTI, reorient to RAS+, resample, check pair geometry, slice to 2D images.

Rules, stated once so every volume reader follows them:

- Orientation: every volume is reoriented to the closest canonical RAS+ voxel order
  (`nibabel.as_closest_canonical`), so a flipped or permuted copy of a scan gives the same
  slices. Slices are shown in radiological convention (patient's right on the image's left,
  anterior or superior at the top).
- Intensity: MR has no absolute scale, so it is mapped to 8 bits by percentiles computed over
  the whole volume (never per slice, which would make every slice equally bright); CT is in
  Hounsfield units and uses a fixed HU window (`ReaderOptions.ct_window`).
- Empty slices: a voxel is foreground when it is more than `FOREGROUND_MARGIN` of the
  volume's robust intensity range (1st..99th percentile) above its background level (the 1st
  percentile); a slice is kept when its foreground fraction is at least
  `ReaderOptions.min_foreground_fraction`. A mask (SynthRAD) replaces this rule.
- Pairs: volumes that are meant to be voxel-aligned must have the same shape and the same
  affine (within `GEOMETRY_ATOL` mm) after reorientation, or the pair is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from healthgpt.data.decode.imaging import percentile_normalize, scale_to_uint8
from healthgpt.data.errors import BadInput
from healthgpt.data.limits import Limits, check, check_working, exceeds
from healthgpt.data.options import ReaderOptions

FOREGROUND_MARGIN = 0.05
GEOMETRY_ATOL = 1e-3  # mm, on affine entries
NIFTI_SUFFIXES = (".nii", ".nii.gz")

_READ_ERRORS = (EOFError, OSError, zlib.error, ImageFileError, ValueError, gzip.BadGzipFile)


@dataclass(frozen=True)
class Volume:
    """A 3D volume in canonical RAS+ voxel order: float32 data and its voxel-to-mm affine."""

    data: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def grid_id(self) -> str:
        """A short fingerprint of shape and affine (to 1e-3 mm): volumes with equal ids are
        voxel-aligned, so the mixture can pair their slices (IXI T2 and PD) without
        reloading both."""
        affine = np.round(self.affine, 3) + 0.0  # + 0.0 turns -0.0 into 0.0
        key = repr((self.shape, affine.tolist()))
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in nib.affines.voxel_sizes(self.affine))  # type: ignore[return-value]


def is_nifti(path: Path | str) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_volume(path: Path, volume_index: int = 0, limits: Limits | None = None) -> Volume:
    """Load a .nii/.nii.gz file as a canonical volume; unreadable files raise `BadInput`.

    4D files (fMRI, multi-echo) give their `volume_index`-th 3D volume. The header's
    dimensions are checked against `limits` before any voxel is read; nibabel then reads
    (and inflates) only the bytes those dimensions need.
    """
    limits = limits or Limits.from_options()
    try:
        image = nib.load(str(path))
        check_header(image.header, volume_index, limits)
        return _canonical(image, volume_index)
    except BadInput:
        raise
    except _READ_ERRORS as exc:
        raise BadInput(_read_reason(exc, str(path))) from exc


def load_volume_bytes(
    data: bytes, name: str, volume_index: int = 0, limits: Limits | None = None
) -> Volume:
    """Load a NIfTI held in memory (a tar member); `name` decides whether to gunzip.

    A gzip member is inflated in bounded steps: first the header, whose dimensions are
    checked, then only the bytes they need (never more than `max_decompressed_bytes`).
    """
    limits = limits or Limits.from_options()
    try:
        if name.lower().endswith(".gz"):
            data = _inflate_nifti(data, limits)
        header = _parse_header(data)
        if header is None:
            raise ValueError("not a NIfTI-1 or NIfTI-2 header")
        check_header(header, volume_index, limits)
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        return _canonical(image_class.from_bytes(data), volume_index)
    except BadInput:
        raise
    except _READ_ERRORS as exc:
        raise BadInput(_read_reason(exc, name)) from exc


def check_header(header: nib.Nifti1Header, volume_index: int, limits: Limits) -> None:
    """Refuse a volume whose header declares more voxels, or more bytes to read, than the
    limits allow (before anything is allocated)."""
    shape = tuple(int(n) for n in header.get_data_shape())
    voxels = math.prod(shape[:3])
    check(
        "max_volume_voxels",
        voxels,
        limits.max_volume_voxels,
        f"NIfTI header declares {' x '.join(map(str, shape[:3]))} =",
    )
    itemsize = int(header.get_data_dtype().itemsize)
    needed = voxels * (volume_index + 1) * itemsize
    check("max_decompressed_bytes", needed, limits.max_decompressed_bytes, "NIfTI data bytes")
    # Raw data, then float32 copies: get_fdata, the canonical reorientation, the uint8
    # normalisation's float work (percentiles, clip, scale), and a possible resample input.
    check_working(needed + voxels * 4 * _FLOAT_COPIES, limits, "NIfTI volume")


_FLOAT_COPIES = 4  # float32 copies of a volume held at once while loading and normalising


def declared_bytes(head: bytes, name: str, limits: Limits) -> int:
    """Bytes a NIfTI file needs (header, extensions and first volume), from its first bytes
    (`head`, gzip-compressed when `name` ends in .gz), checked against `limits`; lets a
    caller refuse an archive member before reading its body."""
    try:
        data = (
            zlib.decompressobj(31).decompress(head, 1024) if name.lower().endswith(".gz") else head
        )
        header = _parse_header(data)
    except (zlib.error, ValueError) as exc:
        raise BadInput(f"unreadable NIfTI: {type(exc).__name__}: {exc}") from exc
    if header is None:
        raise BadInput("unreadable NIfTI: not a NIfTI-1 or NIfTI-2 header")
    check_header(header, 0, limits)
    shape = header.get_data_shape()
    return int(header.get_data_offset()) + math.prod(int(n) for n in shape) * int(
        header.get_data_dtype().itemsize
    )


def _parse_header(data: bytes) -> nib.Nifti1Header | None:
    """The NIfTI-1 or NIfTI-2 header at the start of `data` (uncompressed), or None."""
    for header_class in (nib.Nifti1Header, nib.Nifti2Header):
        size = header_class.template_dtype.itemsize
        if len(data) >= size and header_class.may_contain_header(data[:size]):
            return header_class.from_fileobj(io.BytesIO(data[:size]))
    return None


def _inflate_nifti(data: bytes, limits: Limits) -> bytes:
    """Gunzip a NIfTI: the header first, then as many bytes as it needs, in bounded steps."""
    decompressor = zlib.decompressobj(31)
    head = decompressor.decompress(data, 1024)
    header = _parse_header(head)
    if header is None:
        raise ValueError("not a NIfTI-1 or NIfTI-2 header")
    check_header(header, 0, limits)
    shape = header.get_data_shape()
    needed = int(header.get_data_offset()) + math.prod(int(n) for n in shape) * int(
        header.get_data_dtype().itemsize
    )
    wanted = min(needed, limits.max_decompressed_bytes)
    out, total = [head], len(head)
    pending = decompressor.unconsumed_tail
    while total < wanted and pending and not decompressor.eof:
        block = decompressor.decompress(pending, min(1 << 20, wanted - total))
        out.append(block)
        total += len(block)
        pending = decompressor.unconsumed_tail
    if total < needed and total >= limits.max_decompressed_bytes:
        raise exceeds("max_decompressed_bytes", needed, limits.max_decompressed_bytes, "NIfTI")
    if total < needed:
        raise EOFError(f"compressed NIfTI ends after {total} of {needed} bytes")
    return b"".join(out)


def _read_reason(exc: Exception, path_text: str) -> str:
    message = str(exc).replace(path_text, "<file>")
    kind = "truncated" if isinstance(exc, EOFError) else "unreadable"
    return f"{kind} NIfTI: {type(exc).__name__}: {message}"


def _canonical(image: nib.spatialimages.SpatialImage, volume_index: int) -> Volume:
    if len(image.shape) == 4:
        if not 0 <= volume_index < image.shape[3]:
            raise BadInput(f"4D NIfTI has {image.shape[3]} volumes, asked for {volume_index}")
        image = image.slicer[..., volume_index]
    if len(image.shape) != 3:
        raise BadInput(f"NIfTI is not a 3D volume (shape {tuple(image.shape)})")
    image = nib.as_closest_canonical(image)
    data = np.asarray(image.get_fdata(dtype=np.float32))
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return Volume(data=data, affine=np.asarray(image.affine, dtype=np.float64))


def resample(
    volume: Volume,
    spacing: tuple[float, float, float],
    nearest: bool = False,
    limits: Limits | None = None,
) -> Volume:
    """Resample to `spacing` (mm) on the same grid orientation with SimpleITK.

    The first voxel keeps its position, so the new affine is the old one with scaled axes.
    `nearest` is for label masks; images use linear interpolation. The output grid (extent
    over spacing: 8 voxels of 250 mm at 1 mm are 2000^3) is checked against `limits` before
    SimpleITK allocates it; a SimpleITK failure is a `BadInput`.
    """
    import SimpleITK as sitk

    limits = limits or Limits.from_options()
    old = np.asarray(volume.spacing)
    new = np.asarray(spacing, dtype=np.float64)
    size = np.maximum(1, np.round(np.asarray(volume.shape) * old / new)).astype(int)
    voxels = math.prod(int(n) for n in size)
    shown = " x ".join(str(int(n)) for n in size)
    check("max_volume_voxels", voxels, limits.max_volume_voxels, f"resampled grid {shown} =")
    # Output image, its array copy and the contiguous transpose, all float32, plus the input.
    check_working(voxels * 4 * 3 + volume.data.size * 4 * 2, limits, f"resample to {shown}")
    try:
        return _resample(volume, sitk, old, new, size, nearest)
    except RuntimeError as exc:
        raise BadInput(f"resample to {shown} failed: {str(exc).splitlines()[0][:200]}") from exc


def _resample(volume: Volume, sitk, old, new, size, nearest: bool) -> Volume:  # noqa: ANN001
    # SimpleITK indexes arrays (z, y, x); transposing keeps voxel (i, j, k) at index (i, j, k).
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.data.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in old))
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = sitk.Resample(
        image,
        [int(n) for n in size],
        sitk.Transform(),
        interpolator,
        image.GetOrigin(),
        tuple(float(s) for s in new),
        image.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )
    data = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] * (new / old)
    return Volume(data=np.ascontiguousarray(data, dtype=np.float32), affine=affine)


def check_same_geometry(volumes: dict[str, Volume], atol: float = GEOMETRY_ATOL) -> None:
    """Refuse a set of volumes meant to be voxel-aligned unless shapes and affines agree."""
    (first_name, first), *rest = volumes.items()
    for name, other in rest:
        if other.shape != first.shape:
            raise BadInput(
                f"geometry mismatch: {name} shape {other.shape} != {first_name} shape {first.shape}"
            )
        if not np.allclose(other.affine, first.affine, atol=atol):
            spacing = ", ".join(f"{s:.3g}" for s in other.spacing)
            first_spacing = ", ".join(f"{s:.3g}" for s in first.spacing)
            raise BadInput(
                f"geometry mismatch: {name} affine differs from {first_name} "
                f"(spacing {spacing} vs {first_spacing} mm; max difference "
                f"{np.max(np.abs(other.affine - first.affine)):.3g})"
            )


def to_uint8(volume: Volume, modality: str, options: ReaderOptions) -> np.ndarray:
    """The whole volume as 8 bits: CT by the HU window, everything else by percentiles."""
    if modality == "CT":
        return scale_to_uint8(volume.data, *options.ct_window)
    return percentile_normalize(volume.data)


def foreground(data: np.ndarray, margin: float = FOREGROUND_MARGIN) -> np.ndarray:
    """Voxels clearly above the background level (see the module docstring)."""
    lo, hi = np.percentile(data, [1.0, 99.0])
    if hi <= lo:
        return data > lo
    return data > lo + margin * (hi - lo)


def kept_slices(mask: np.ndarray, axis: int, stride: int, min_fraction: float) -> list[int]:
    """Indices along `axis`, every `stride`-th, whose foreground fraction >= `min_fraction`."""
    other = tuple(i for i in range(3) if i != axis)
    fractions = mask.mean(axis=other)
    return [i for i in range(0, mask.shape[axis], max(1, stride)) if fractions[i] >= min_fraction]


def display_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A 2D slice of a RAS+ array in radiological display orientation.

    For each axis the in-plane axes stay in RAS order, so reversing both and transposing puts
    the higher of the second axis (anterior, superior) at the top and the patient's right (or
    anterior, for sagittal slices) on the left.
    """
    plane = np.take(volume, index, axis=axis)
    return np.ascontiguousarray(plane[::-1, ::-1].T)


def volume_slices(
    volume: Volume,
    modality: str,
    options: ReaderOptions,
    mask: np.ndarray | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(slice index, uint8 2D image) for every kept slice along `options.slice_axis`.

    `mask` (boolean, same shape) replaces the intensity foreground rule.
    """
    axis = options.slice_axis
    if axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {axis}")
    keep = foreground(volume.data) if mask is None else mask
    pixels = to_uint8(volume, modality, options)
    for index in kept_slices(keep, axis, options.slice_stride, options.min_foreground_fraction):
        yield index, display_slice(pixels, axis, index)


def nifti_stem(path: Path | str) -> str:
    """File name without .nii / .nii.gz."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name

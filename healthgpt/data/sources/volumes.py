"""Records from volumes, shared by the NIfTI readers (IXI, SynthRAD, any NIfTI folder).

One place decides how a volume becomes image records: optional resampling
(`options.extra["spacing"]`, mm), the slicing and intensity rules of `healthgpt.data.decode.nifti`,
and the per-slice metadata every volume record carries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthgpt.data.decode.imaging import encode_png
from healthgpt.data.decode.nifti import Volume, resample, volume_slices
from healthgpt.data.schema import new_record
from healthgpt.data.sources.base import BadInput, ReaderOptions, meta_json


def target_spacing(options: ReaderOptions) -> tuple[float, float, float] | None:
    """`options.extra["spacing"]` as three floats (one number means isotropic), or None."""
    spacing = options.extra.get("spacing")
    if spacing is None:
        return None
    values = [float(spacing)] * 3 if isinstance(spacing, int | float) else list(map(float, spacing))
    if len(values) != 3 or min(values) <= 0:
        raise ValueError(f"spacing must be one or three positive numbers, got {spacing!r}")
    return values[0], values[1], values[2]


def prepare(volume: Volume, options: ReaderOptions, nearest: bool = False) -> Volume:
    """Resample when the options ask for a spacing; otherwise the volume as loaded."""
    spacing = target_spacing(options)
    if spacing is None:
        return volume
    return resample(volume, spacing, nearest=nearest, limits=options.limits)


def slice_meta(volume: Volume, options: ReaderOptions, index: int) -> dict[str, Any]:
    return {
        "slice_index": index,
        "slice_axis": options.slice_axis,
        "n_slices": volume.shape[options.slice_axis],
        "spacing_mm": [round(s, 4) for s in volume.spacing],
        "grid_id": volume.grid_id,
    }


def no_slices_reason(options: ReaderOptions) -> str:
    return (
        "no slice reaches the foreground threshold "
        f"(min_foreground_fraction={options.min_foreground_fraction})"
    )


def image_slice_records(
    volume: Volume,
    *,
    source: str,
    orig_id: str,
    modality: str,
    options: ReaderOptions,
    subject_id: str | None,
    body_part: str | None,
    orig_path: str | None,
    meta: dict[str, Any],
    mask: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One kind "image" record per kept slice; a volume with no kept slice raises `BadInput`."""
    records = []
    for index, pixels in volume_slices(volume, modality, options, mask):
        records.append(
            new_record(
                source=source,
                orig_id=orig_id,
                split="train",
                kind="image",
                modality=modality,
                image=encode_png(pixels, options.image_size, options.png_compress_level),
                id_parts=(options.slice_axis, index),
                body_part=body_part,
                subject_id=subject_id,
                orig_path=orig_path,
                meta=meta_json(**meta, **slice_meta(volume, options, index)),
            )
        )
    if not records:
        raise BadInput(no_slices_reason(options))
    return records

"""The knobs of reading a source, shared by the decoders and the readers above them."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from healthgpt.data.limits import Limits

DEFAULT_SALT = "healthgpt-public-demo-salt"


@dataclass(frozen=True)
class ReaderOptions:
    """Knobs shared by all readers. Defaults reproduce the paper's setup."""

    image_size: int = 256
    language: str = "en"  # SLAKE: "en", "zh" or "all"
    frontal_only: bool = True  # MIMIC-CXR: PA/AP views only
    # Secret salt of every pseudonym. None: chosen per source by `deid.salt_for_source`
    # (HEALTHGPT_DEID_SALT, else the public salt for a bundled sample, else the
    # installation's private salt file).
    deid_salt: str | None = None
    # DICOM: the pixels of the classes `deid.BURNED_IN_RULES` names (ultrasound, secondary
    # capture, ...) were reviewed or cleaned, so they are not quarantined for burned-in text.
    burned_in_reviewed: bool = False
    png_compress_level: int = 1
    slice_axis: int = 2  # NIfTI: axial in the canonical RAS orientation
    slice_stride: int = 1
    min_foreground_fraction: float = 0.05  # NIfTI: skip slices with less non-background
    ct_window: tuple[float, float] = (-1000.0, 1000.0)  # HU window (lo, hi) for CT volumes
    # (index, n_chunks): read only the items of one stable chunk
    # (see healthgpt.data.sources.chunks).
    chunk: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.chunk is not None:
            index, n_chunks = self.chunk
            if not 0 <= index < n_chunks:
                raise ValueError(f"chunk {index} does not exist among {n_chunks} chunks")

    @cached_property
    def limits(self) -> Limits:
        """Limits on hostile input (`healthgpt.data.limits`): defaults, then the
        `HEALTHGPT_LIMIT_*` variables, then `extra["limits"]`."""
        return Limits.from_options(self.extra)

"""The knobs of reading a source, shared by the decoders and the readers above them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SALT = "healthgpt-public-demo-salt"


@dataclass(frozen=True)
class ReaderOptions:
    """Knobs shared by all readers. Defaults reproduce the paper's setup."""

    image_size: int = 256
    language: str = "en"  # SLAKE: "en", "zh" or "all"
    frontal_only: bool = True  # MIMIC-CXR: PA/AP views only
    # Secret salt of every pseudonym. Set HEALTHGPT_DEID_SALT for real data and keep it private.
    deid_salt: str = field(
        default_factory=lambda: os.environ.get("HEALTHGPT_DEID_SALT", DEFAULT_SALT)
    )
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

"""Pictures a researcher would rather look at than read: thumbnail grids of shard images."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image

from healthgpt.data.decode.imaging import load_image_bytes, resize_square


def thumbnail_grid(images: Sequence[bytes], columns: int = 4, tile: int = 96) -> bytes:
    """Lay encoded images out in a grid of `tile`-pixel squares; return PNG bytes."""
    if not images:
        raise ValueError("no images to show")
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * tile, rows * tile), (32, 32, 32))
    for index, data in enumerate(images):
        thumb = resize_square(load_image_bytes(data).convert("RGB"), tile)
        sheet.paste(thumb, ((index % columns) * tile, (index // columns) * tile))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()

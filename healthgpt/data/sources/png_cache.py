"""A small LRU cache of encoded PNGs, because QA sources ask many questions about one image."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class PngCache:
    """Encoded PNGs of recently used images, bounded, keyed by path (or by encoded bytes).

    QA sources ask 5-50 questions per image; re-decoding the JPEG for each would dominate
    ingestion time. Bounded so memory does not grow with the source.
    """

    def __init__(self, encode: Callable[[Any], bytes], max_items: int = 256) -> None:
        self.encode = encode
        self.max_items = max_items
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable) -> bytes:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        png = self.encode(key)
        self._items[key] = png
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return png

"""A small cache of encoded PNGs, because QA sources ask many questions about one image."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class PngCache:
    """Encoded PNGs of recently used images, bounded, keyed by path (or by encoded bytes).

    QA sources ask 5-50 questions per image; re-decoding the JPEG for each would dominate
    ingestion time. Bounded so memory does not grow with the source: at most `max_items`,
    least recently used out first. A reader that knows how often each image will be asked
    for encodes it with `prefetch(key, uses)`: the image is then held until its last use
    and no longer, so images asked for once do not fill the cache (in a fresh process,
    256 held PNGs were 25 MB of memory page-faulted in for nothing, 1-2% of ingestion's
    CPU).
    """

    def __init__(self, encode: Callable[[Any], bytes], max_items: int = 256) -> None:
        self.encode = encode
        self.max_items = max_items
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._uses_left: dict[Hashable, int] = {}

    def get(self, key: Hashable) -> bytes:
        png = self._items.get(key)
        if png is None:
            png = self.encode(key)
            self._keep(key, png)
            return png
        left = self._uses_left.get(key)
        if left == 1:
            del self._uses_left[key], self._items[key]
            return png
        if left is not None:
            self._uses_left[key] = left - 1
        self._items.move_to_end(key)
        return png

    def prefetch(self, key: Hashable, uses: int) -> None:
        """Encode `key` now, unless it is held, for the `uses` `get`s of it still to come
        (all of them, counted by the caller): it is dropped after the last. One evicted by
        the bound before its uses came is encoded again when asked for."""
        if uses < 1:
            return
        if key in self._items:
            self._items.move_to_end(key)  # a batch's own images stay while it fetches the rest
        else:
            self._keep(key, self.encode(key))
        self._uses_left[key] = uses

    def _keep(self, key: Hashable, png: bytes) -> None:
        self._items[key] = png
        if len(self._items) > self.max_items:
            old, _ = self._items.popitem(last=False)
            self._uses_left.pop(old, None)

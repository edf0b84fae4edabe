"""A small cache of encoded PNGs, because QA sources ask many questions about one image."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class PngCache:
    """Encoded PNGs of recently used images, bounded, keyed by path (or by encoded bytes).

    QA sources ask 5-50 questions per image; re-decoding the JPEG for each would dominate
    ingestion time. Bounded so memory does not grow with the source: at most `max_items`,
    least recently used out first. A reader that knows how many times each image will be
    asked for passes those counts (`uses`, consumed by `get`): a counted image is then held
    until its last use and no longer, so images asked for once do not fill the cache (in a
    fresh process, 256 held PNGs were 25 MB of memory page-faulted in for nothing, 1-2% of
    ingestion's CPU). An image evicted by the bound before its last use is encoded again.
    """

    def __init__(
        self,
        encode: Callable[[Any], bytes],
        max_items: int = 256,
        uses: Counter[Hashable] | None = None,
    ) -> None:
        self.encode = encode
        self.max_items = max_items
        self.uses = uses if uses is not None else Counter()
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable) -> bytes:
        png = self.fetch(key)
        if key in self.uses:
            self.uses[key] -= 1
            if self.uses[key] <= 0:
                del self.uses[key]
                self._items.pop(key, None)
        return png

    def fetch(self, key: Hashable) -> bytes:
        """The PNG of `key`, encoded now unless held, held as the most recently used,
        without spending one of its counted uses (a reader encoding a batch's images
        before their records are built)."""
        png = self._items.get(key)
        if png is not None:
            self._items.move_to_end(key)
            return png
        png = self.encode(key)
        self._items[key] = png
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return png

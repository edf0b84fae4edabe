"""PngCache: an image counted in `uses` is held until its last use and no longer;
everything else is a bounded LRU cache."""

from __future__ import annotations

from collections import Counter

from healthgpt.data.sources.png_cache import PngCache


def counting_cache(max_items: int = 4, uses: Counter | None = None) -> tuple[PngCache, list]:
    encoded: list[str] = []

    def encode(key: str) -> bytes:
        encoded.append(key)
        return f"png of {key}".encode()

    return PngCache(encode, max_items=max_items, uses=uses), encoded


def test_a_counted_image_is_held_for_its_uses_and_then_dropped():
    cache, encoded = counting_cache(uses=Counter(a=3))
    cache.fetch("a")
    assert [cache.get("a") for _ in range(3)] == [b"png of a"] * 3
    assert encoded == ["a"]
    assert "a" not in cache._items and "a" not in cache.uses
    cache.get("a")  # a use that was not counted: encoded again, correct bytes
    assert encoded == ["a", "a"]


def test_an_image_used_once_is_not_kept_after_its_use():
    cache, encoded = counting_cache(uses=Counter("abcdef"))
    for key in "abcdef":
        cache.fetch(key)
        assert cache.get(key) == f"png of {key}".encode()
    assert encoded == list("abcdef")
    assert not cache._items and not cache.uses


def test_fetching_again_spends_no_use():
    cache, encoded = counting_cache(uses=Counter(a=2))
    cache.fetch("a"), cache.get("a"), cache.fetch("a")  # a later batch naming the image
    assert "a" in cache._items and cache.uses["a"] == 1
    cache.get("a")
    assert "a" not in cache._items and encoded == ["a"]


def test_fetching_a_held_image_refreshes_it_so_the_batch_keeps_it():
    cache, encoded = counting_cache(max_items=2, uses=Counter(a=2, b=2, c=1))
    cache.fetch("a"), cache.fetch("b"), cache.get("a"), cache.get("b")
    cache.fetch("a")  # the next batch names a (held) and c (new): c evicts b, not a
    cache.fetch("c")
    assert cache.get("a") == b"png of a" and encoded == ["a", "b", "c"]


def test_the_bound_holds_for_counted_images_and_an_evicted_one_is_encoded_again():
    cache, encoded = counting_cache(max_items=2, uses=Counter(a=2, b=2, c=2))
    for key in "abc":
        cache.fetch(key)
    assert list(cache._items) == ["b", "c"]
    assert cache.get("a") == b"png of a" and cache.uses["a"] == 1
    assert encoded == ["a", "b", "c", "a"]


def test_uncounted_gets_are_an_lru_cache():
    cache, encoded = counting_cache(max_items=2)
    cache.get("a"), cache.get("b"), cache.get("a"), cache.get("c"), cache.get("a")
    assert encoded == ["a", "b", "c"]  # b was the least recently used when c came
    assert list(cache._items) == ["c", "a"]

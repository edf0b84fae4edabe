"""PngCache: an image prefetched with its number of uses is held until the last of them and
no longer; everything else is a bounded LRU cache."""

from __future__ import annotations

from healthgpt.data.sources.png_cache import PngCache


def counting_cache(max_items: int = 4) -> tuple[PngCache, list[str]]:
    encoded: list[str] = []

    def encode(key: str) -> bytes:
        encoded.append(key)
        return f"png of {key}".encode()

    return PngCache(encode, max_items=max_items), encoded


def test_a_prefetched_image_is_held_for_its_uses_and_then_dropped():
    cache, encoded = counting_cache()
    cache.prefetch("a", uses=3)
    assert [cache.get("a") for _ in range(3)] == [b"png of a"] * 3
    assert encoded == ["a"]
    assert "a" not in cache._items and "a" not in cache._uses_left
    cache.get("a")  # a use that was not counted: encoded again, correct bytes
    assert encoded == ["a", "a"]


def test_an_image_used_once_is_not_kept_after_its_use():
    cache, encoded = counting_cache()
    for key in "abcdef":
        cache.prefetch(key, uses=1)
        assert cache.get(key) == f"png of {key}".encode()
    assert encoded == list("abcdef")
    assert not cache._items and not cache._uses_left


def test_a_later_prefetch_of_a_held_image_takes_the_uses_still_to_come():
    cache, encoded = counting_cache()
    cache.prefetch("a", uses=3)
    cache.get("a")
    cache.prefetch("a", uses=2)  # a later batch naming the same image: 2 of 3 uses left
    cache.get("a")
    assert "a" in cache._items
    cache.get("a")
    assert "a" not in cache._items and encoded == ["a"]


def test_prefetching_a_held_image_refreshes_it_so_the_batch_keeps_it():
    cache, encoded = counting_cache(max_items=2)
    cache.prefetch("a", uses=2), cache.prefetch("b", uses=2), cache.get("a"), cache.get("b")
    cache.prefetch("a", uses=1)  # the next batch names a (held) and c (new): c evicts b
    cache.prefetch("c", uses=1)
    assert cache.get("a") == b"png of a" and encoded == ["a", "b", "c"]


def test_the_bound_holds_for_counted_images_and_an_evicted_one_is_encoded_again():
    cache, encoded = counting_cache(max_items=2)
    for key in "abc":
        cache.prefetch(key, uses=2)
    assert len(cache._items) == 2 and "a" not in cache._uses_left
    assert cache.get("a") == b"png of a"
    assert encoded == ["a", "b", "c", "a"]


def test_unprefetched_gets_are_an_lru_cache():
    cache, encoded = counting_cache(max_items=2)
    cache.get("a"), cache.get("b"), cache.get("a"), cache.get("c"), cache.get("a")
    assert encoded == ["a", "b", "c"]  # b was the least recently used when c came
    cache.prefetch("a", uses=1)  # held already: not encoded again, then counted
    cache.get("a")
    assert encoded == ["a", "b", "c"] and "a" not in cache._items


def test_zero_uses_encode_nothing():
    cache, encoded = counting_cache()
    cache.prefetch("a", uses=0)
    assert encoded == [] and not cache._items

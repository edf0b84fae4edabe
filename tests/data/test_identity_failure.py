"""A failure while batched phashes are computed (a MemoryError under memory pressure) must not
corrupt what other images' `identity_of` returns."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from healthgpt.data.decode import identity
from healthgpt.data.decode.identity import ImageHash, hash_png, identity_of, remember_identities
from healthgpt.data.decode.imaging import encode_png


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40), np.uint8))


def test_one_failed_batch_leaves_other_identities_intact(monkeypatch: pytest.MonkeyPatch) -> None:
    real = identity.phashes
    calls = {"n": 0}

    def flaky(thumbnails):  # a transient failure (MemoryError under memory pressure)
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("simulated")
        return real(thumbnails)

    monkeypatch.setattr(identity, "phashes", flaky)
    with remember_identities():
        first = encode_png(_image(1), None)
        second = encode_png(_image(2), None)
        with pytest.raises(MemoryError):  # ingestion's reader quarantines this item
            identity_of(first)
        # Another record, later: its identity must be a real one, the same as decoding.
        found = identity_of(second)
        assert type(found) is ImageHash, f"identity_of returned {type(found).__name__}"
        assert found == hash_png(second)

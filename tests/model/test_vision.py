"""Hierarchical visual perception and CLIP preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from healthgpt.model.vision import (
    ClipImageProcessor,
    HierarchicalVisionEncoder,
    build_projector,
    build_vision_tower,
)

TOWER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


@pytest.fixture(scope="module")
def tower():
    torch.manual_seed(0)
    return build_vision_tower(None, TOWER)


@pytest.mark.parametrize(
    ("select", "expected_index"),
    [(-2, 3), (1, 1), (-1, 4), (0, 0), (2, 2)],
)
def test_hvp_reads_the_selected_hidden_state_without_cls(tower, select, expected_index):
    encoder = HierarchicalVisionEncoder(tower, {"family": select})
    pixels = torch.randn(2, 3, 32, 32)
    reference = tower(pixel_values=pixels, output_hidden_states=True).hidden_states
    features = encoder(pixels, "family")
    assert encoder.layer_index("family") == expected_index
    assert features.shape == (2, encoder.num_patches, 32) == (2, 16, 32)
    torch.testing.assert_close(features, reference[expected_index][:, 1:])


def test_comprehension_and_generation_read_different_depths(tower):
    encoder = HierarchicalVisionEncoder(tower, {"comprehension": -2, "generation": 1})
    pixels = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(encoder(pixels, "comprehension"), encoder(pixels, "generation"))


def test_out_of_range_layer_is_rejected(tower):
    with pytest.raises(ValueError):
        HierarchicalVisionEncoder(tower, {"family": 9})


def test_processor_pads_to_square_with_the_clip_mean():
    wide = Image.fromarray(np.full((10, 30, 3), 255, dtype=np.uint8))
    pixels = ClipImageProcessor(30)(wide)
    assert pixels.shape == (1, 3, 30, 30)
    # Top rows are padding with the CLIP mean (about 0 after normalization); the middle is white.
    assert pixels[0, :, 0, 15].abs().max() < 0.02
    assert pixels[0, :, 15, 15].min() > 1.0


def test_projector_is_two_layer_gelu_mlp():
    projector = build_projector(32, 48)
    assert [type(m).__name__ for m in projector] == ["Linear", "GELU", "Linear"]
    assert projector(torch.randn(2, 5, 32)).shape == (2, 5, 48)

"""CLIP vision tower, hierarchical visual perception (HVP) and the per-family projectors.

HVP: comprehension reads deep, abstract features (the penultimate hidden state, as LLaVA does);
generation reads shallow, detail-preserving ones (the first hidden state), because the
generated image must keep the input's fine structure. Each family has its own projector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

# CLIP's normalization constants (openai/clip-vit-large-patch14-336 preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def expand_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """Pad the short side symmetrically so the image is square, keeping its aspect ratio."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    out = Image.new(image.mode, (side, side), fill)
    out.paste(image, ((side - width) // 2, (side - height) // 2))
    return out


class ClipImageProcessor:
    """PIL images -> normalized pixel tensors: pad to square with the CLIP mean, resize."""

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ) -> None:
        self.image_size = image_size
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.fill = tuple(int(m * 255) for m in mean)

    def __call__(self, images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
        """A [B, 3, S, S] float tensor (B = 1 for a single image)."""
        if isinstance(images, Image.Image):
            images = [images]
        return torch.stack([self.one(image) for image in images])

    def one(self, image: Image.Image) -> torch.Tensor:
        image = expand_to_square(image.convert("RGB"), self.fill)
        size = (self.image_size, self.image_size)
        image = image.resize(size, Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (pixels - self.mean) / self.std


def build_vision_tower(
    name_or_path: str | None,
    random_config: Mapping[str, object] | None = None,
    *,
    local_files_only: bool = True,
    dtype: torch.dtype = torch.float32,
) -> CLIPVisionModel:
    """A frozen CLIP vision tower: pretrained if a name/path is given, else randomly initialized."""
    if name_or_path:
        tower = CLIPVisionModel.from_pretrained(
            name_or_path, local_files_only=local_files_only, dtype=dtype
        )
    else:
        tower = CLIPVisionModel(CLIPVisionConfig(**(random_config or {}))).to(dtype)
    return tower.requires_grad_(False).eval()


class HierarchicalVisionEncoder(nn.Module):
    """Patch features (CLS dropped) from the hidden-state layer chosen per task family.

    Runs only as many encoder layers as the chosen layer needs: generation's shallow
    features (layer 1) cost one transformer layer, not the whole tower.
    """

    def __init__(self, tower: CLIPVisionModel, select_layers: Mapping[str, int]) -> None:
        super().__init__()
        self.tower = tower
        self.select_layers = dict(select_layers)
        n = tower.config.num_hidden_layers
        for family, layer in self.select_layers.items():
            if not -n - 1 <= layer <= n:
                raise ValueError(f"{family}: hidden-state index {layer} outside 0..{n}")

    @property
    def hidden_size(self) -> int:
        return self.tower.config.hidden_size

    @property
    def image_size(self) -> int:
        return self.tower.config.image_size

    @property
    def num_patches(self) -> int:
        return (self.tower.config.image_size // self.tower.config.patch_size) ** 2

    def layer_index(self, family: str) -> int:
        """The selected index into CLIP's ``hidden_states`` (embeddings = 0), made positive."""
        layer = self.select_layers[family]
        return layer if layer >= 0 else self.tower.config.num_hidden_layers + 1 + layer

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, family: str) -> torch.Tensor:
        vm = getattr(self.tower, "vision_model", self.tower)  # transformers 4.x nests it
        dtype = next(self.tower.parameters()).dtype
        hidden = vm.pre_layrnorm(vm.embeddings(pixel_values.to(dtype)))
        for layer in vm.encoder.layers[: self.layer_index(family)]:
            out = layer(hidden, None)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden[:, 1:]


def build_projector(in_features: int, out_features: int) -> nn.Sequential:
    """LLaVA's ``mlp2x_gelu``: Linear, GELU, Linear (indices 0 and 2 match its checkpoints)."""
    return nn.Sequential(
        nn.Linear(in_features, out_features),
        nn.GELU(),
        nn.Linear(out_features, out_features),
    )

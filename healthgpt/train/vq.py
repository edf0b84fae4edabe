"""The VQ image tokenizer a run uses: trained small offline, or a registered pretrained one.

Either way the result is a directory with `vq.json` (kind, shape, sha256 of the weights) that
the stages take as input; its hash is part of each stage's run key, so retraining the
tokenizer never lets a stage resume from a checkpoint made with other codes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from healthgpt.data.shards import atomic_directory, file_sha256, write_json
from healthgpt.train.data import split_files
from healthgpt.train.interim_model import TinySpec, TinyVQ, decode_png, train_vq
from healthgpt.train.model_api import VQ_FILE, VQ_INFO

SUBSETS = ("stage1", "stage3")


@dataclass(frozen=True)
class VQResult:
    directory: Path
    info: dict[str, Any]


def generation_images(mixture_dir: Path, size: int, limit: int) -> list[torch.Tensor]:
    """Target images (and inputs) of the generation samples of the training splits."""
    images: list[torch.Tensor] = []
    for subset in SUBSETS:
        for path in split_files(Path(mixture_dir) / subset, "train"):
            parquet = pq.ParquetFile(path)
            for group in range(parquet.metadata.num_row_groups):
                table = parquet.read_row_group(group, columns=["task_family", "target_image"])
                for family, target in zip(
                    table["task_family"].to_pylist(), table["target_image"].to_pylist(), strict=True
                ):
                    if family == "generation" and target and target.get("bytes"):
                        images.append(decode_png(target["bytes"], size))
                        if len(images) >= limit:
                            return images
    return images


def train_tiny_vq(
    mixture_dir: Path, out_dir: Path, steps: int = 300, limit: int = 2048, seed: int = 0
) -> VQResult:
    """Train the small VQ tokenizer on the mixture's generation images (CPU, about a minute)."""
    spec = TinySpec()
    images = generation_images(mixture_dir, spec.image_size, limit)
    if not images:
        raise ValueError(f"{mixture_dir}: no generation images in the stage subsets to train on")
    torch.manual_seed(seed)
    vq = TinyVQ(spec)
    losses = train_vq(vq, images, steps=steps)
    from safetensors.torch import save_file

    with atomic_directory(Path(out_dir)) as staging:
        save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, staging / VQ_FILE)
        info = {
            "kind": "tiny",
            "codebook": spec.codebook,
            "codes_per_image": spec.num_codes,
            "image_size": spec.image_size,
            "images": len(images),
            "steps": steps,
            "loss_first": losses[0],
            "loss_last": losses[-1],
            "codes_used": int(torch.unique(vq.encode(torch.stack(images[:512]))).numel()),
            "sha256": file_sha256(staging / VQ_FILE),
        }
        write_json(staging / VQ_INFO, info)
    return VQResult(Path(out_dir), info)


def register_pretrained_vq(checkpoint: Path, out_dir: Path, codebook: int = 8192) -> VQResult:
    """Record a pretrained taming VQGAN checkpoint (by path and sha256) for the stages."""
    checkpoint = Path(checkpoint).absolute()
    if not checkpoint.is_file():
        raise FileNotFoundError(f"VQ checkpoint {checkpoint} does not exist")
    with atomic_directory(Path(out_dir)) as staging:
        info = {
            "kind": "taming",
            "path": str(checkpoint),
            "codebook": codebook,
            "sha256": file_sha256(checkpoint),
        }
        write_json(staging / VQ_INFO, info)
    return VQResult(Path(out_dir), info)


def vq_hash(vq_dir: Path | None) -> str:
    """The weights' sha256 recorded in vq.json ('' when there is no tokenizer)."""
    if vq_dir is None or not (Path(vq_dir) / VQ_INFO).is_file():
        return ""
    return json.loads((Path(vq_dir) / VQ_INFO).read_text())["sha256"]

"""The VQ image tokenizer a run uses: trained small offline, or a registered pretrained one.

Either way the result is a directory with `vq.json` (kind, shape, sha256 of the weights) that
the stages take as input; its hash is part of each stage's run key, so retraining the
tokenizer never lets a stage resume from a checkpoint made with other codes.

- `small`: `healthgpt.model`'s `VQTokenizer` with the model preset's VQ shape and the
  `nearest` quantizer, trained on the mixture's generation images and written with `save_vq`
  as `vq.safetensors`; `model_api.model_config` points the preset's `vq.ckpt_path` at it.
- `taming`: a pretrained taming VQGAN (`last.ckpt` + `model.yaml`), recorded by path.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from healthgpt.data.tasks import STAGE1, STAGE3
from healthgpt.model import VQTokenizer, get_preset, images_to_tensor, save_vq
from healthgpt.model.vq import load_lightning_state_dict
from healthgpt.progress import Progress
from healthgpt.storage import atomic_directory, file_sha256, output_path, write_json
from healthgpt.train.data import iter_rows, split_files
from healthgpt.train.model_api import VQ_FILE, VQ_INFO

SUBSETS = (STAGE1, STAGE3)  # every training sample is in one of them (stage 2 is from 1)


@dataclass(frozen=True)
class VQResult:
    directory: Path
    info: dict[str, Any]


def generation_images(mixture_dir: Path, resolution: int, limit: int) -> torch.Tensor:
    """Target images of the generation samples of the training splits, [N, 3, R, R] in [-1, 1]."""
    images: list[torch.Tensor] = []
    columns = ["task_family", "target_image"]
    for subset in SUBSETS:
        files = split_files(output_path(mixture_dir) / subset, "train")
        for row in iter_rows(files, columns, "generation"):
            data = (row["target_image"] or {}).get("bytes")
            if data:
                image = Image.open(io.BytesIO(data))
                images.append(images_to_tensor(image, resolution)[0])
                if len(images) >= limit:
                    return torch.stack(images)
    return torch.stack(images) if images else torch.zeros(0)


def train_small_vq(
    mixture_dir: Path,
    out_dir: Path,
    steps: int = 150,
    limit: int = 2048,
    seed: int = 0,
    model_preset: str = "tiny",
    batch: int = 16,
    lr: float = 2e-3,
) -> VQResult:
    """Train the preset's VQ tokenizer (nearest quantizer) on the mixture's generation images."""
    cfg = replace(get_preset(model_preset).vq, quantizer="nearest", ckpt_path=None)
    images = generation_images(mixture_dir, cfg.resolution, limit)
    if not len(images):
        raise ValueError(f"{mixture_dir}: no generation images in the stage subsets to train on")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vq = VQTokenizer(cfg)
    _init_codebook(vq, images[: 4 * batch], generator)
    optimizer = torch.optim.Adam(vq.parameters(), lr=lr)
    losses = []
    with Progress(f"vq_tokenizer training ({len(images)} images)", steps, "steps") as progress:
        for _ in range(steps):
            index = torch.randint(0, len(images), (min(batch, len(images)),), generator=generator)
            losses.append(vq.train_step(images[index], optimizer)["loss"])
            progress.update(loss=losses[-1])
    vq.eval()
    codes = vq.encode(images[:512])
    with atomic_directory(Path(out_dir)) as staging:
        save_vq(vq, staging / VQ_FILE)
        info = {
            "kind": "small",
            "model_preset": model_preset,
            "codebook": cfg.n_embed,
            "codes_per_image": cfg.grid_size**2,
            "resolution": cfg.resolution,
            "images": len(images),
            "steps": steps,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "codes_used": int(torch.unique(codes).numel()),
            "sha256": file_sha256(staging / VQ_FILE),
        }
        write_json(staging / VQ_INFO, info)
    return VQResult(Path(out_dir), info)


@torch.no_grad()
def _init_codebook(vq: VQTokenizer, images: torch.Tensor, generator: torch.Generator) -> None:
    """Start the codebook on encoder outputs, so no code is dead at step 0."""
    z = vq.quant_conv(vq.encoder(images)).permute(0, 2, 3, 1).reshape(-1, vq.config.embed_dim)
    pick = torch.randint(0, len(z), (vq.config.n_embed,), generator=generator)
    noise = torch.randn(z[pick].shape, generator=generator)
    vq.quantize.embedding.weight.copy_(z[pick] + 0.01 * noise * z.std())


def register_pretrained_vq(checkpoint: Path, yaml: Path, out_dir: Path) -> VQResult:
    """Record a pretrained taming VQGAN checkpoint and its model.yaml (by path and sha256);
    every later load verifies that sha256 (`VQConfig.ckpt_sha256`)."""
    checkpoint, yaml = Path(checkpoint).absolute(), Path(yaml).absolute()
    for path in (checkpoint, yaml):
        if not path.is_file():
            raise FileNotFoundError(f"VQ file {path} does not exist")
    # Refused now rather than at the first training step: it must load without running code.
    load_lightning_state_dict(checkpoint)
    with atomic_directory(Path(out_dir)) as staging:
        info = {
            "kind": "taming",
            "path": str(checkpoint),
            "yaml": str(yaml),
            "sha256": file_sha256(checkpoint),
            "yaml_sha256": file_sha256(yaml),
        }
        write_json(staging / VQ_INFO, info)
    return VQResult(Path(out_dir), info)


def vq_hash(vq_dir: Path | None) -> str:
    """The weights' sha256 recorded in vq.json ('' when there is no tokenizer)."""
    if vq_dir is None or not (Path(vq_dir) / VQ_INFO).is_file():
        return ""
    return json.loads((Path(vq_dir) / VQ_INFO).read_text())["sha256"]

"""VQ image tokenizer: image -> grid of discrete codes -> image.

The architecture is taming-transformers' VQGAN (Encoder/Decoder built from ResnetBlock,
AttnBlock, Downsample, Upsample), written here with the same parameter names so the
checkpoint HealthGPT uses (VQGAN OpenImages f=8, 8192 codes, Gumbel quantization:
``last.ckpt`` + ``model.yaml``) loads with strict key checking. Two quantizers share it:

- ``gumbel``: taming's GumbelQuantize (``quantize.proj`` 1x1 conv to code logits,
  ``quantize.embed`` codebook); encoding takes the argmax, so it is deterministic.
- ``nearest``: nearest-codebook-entry VQ (taming's VectorQuantizer2 names,
  ``quantize.embedding``) with codebook and commitment losses, for training a small tokenizer
  from scratch offline (:meth:`VQTokenizer.loss`, :meth:`VQTokenizer.train_step`), saved with
  :func:`save_vq` and used by a preset through ``VQConfig.ckpt_path``.

Images are float tensors in [-1, 1], [B, 3, H, W]; codes are long tensors [B, h, w].
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import nn

from healthgpt.storage import atomic_path


@dataclass
class VQConfig:
    """Encoder/decoder shape (taming's ``ddconfig``) plus the codebook.

    Defaults are the VQGAN OpenImages f=8 Gumbel model HealthGPT uses; a ``model.yaml`` given
    as ``yaml_path`` overrides them.
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    z_channels: int = 256
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0
    n_embed: int = 8192
    embed_dim: int = 256
    quantizer: Literal["gumbel", "nearest"] = "gumbel"
    beta: float = 0.25  # commitment weight of the nearest quantizer
    ckpt_path: str | None = None
    yaml_path: str | None = None
    # sha256 of the files at ckpt_path and yaml_path when they were registered: a
    # checkpoint built from a config (a registered one) is loaded only with its sha256,
    # verified on the very bytes that are loaded.
    ckpt_sha256: str | None = None
    yaml_sha256: str | None = None

    @property
    def grid_size(self) -> int:
        return self.resolution // 2 ** (len(self.ch_mult) - 1)


def config_from_taming_yaml(
    path: str | Path, sha256: str | None = None, **overrides: Any
) -> VQConfig:
    """Read ``model.params`` (ddconfig, n_embed, embed_dim, target) of a taming ``model.yaml``
    (its bytes read once, checked against `sha256` when given, and parsed)."""
    doc = yaml.safe_load(read_verified(path, sha256).decode("utf-8"))
    model = doc["model"]
    params = model["params"]
    dd = params["ddconfig"]
    if dd.get("double_z", False):
        raise ValueError("double_z encoders (KL autoencoders) are not VQ tokenizers")
    known = {f.name for f in fields(VQConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in dd.items() if k in known}
    values.update(n_embed=params["n_embed"], embed_dim=params["embed_dim"])
    values["quantizer"] = "gumbel" if model.get("target", "").endswith("GumbelVQ") else "nearest"
    values["yaml_path"] = str(path)
    values["yaml_sha256"] = sha256
    values.update(overrides)
    return VQConfig(**values)


# ----- taming's building blocks (same parameter names) -----


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, hh, ww))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # taming's asymmetric padding


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(blocks: list[nn.Module], attns: list[nn.Module]) -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attns)
    return level


def _mid(channels: int, dropout: float) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout)
    mid.attn_1 = AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels, dropout)
    return mid


def _run_mid(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


def _run_level(level: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[i](h)
    return h


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = (1, *cfg.ch_mult)
        res = cfg.resolution
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg.ch_mult):
            block_in, block_out = cfg.ch * in_mult[i], cfg.ch * mult
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _level(blocks, attns)
            if i != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            self.down.append(level)
        self.mid = _mid(block_in, cfg.dropout)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = _run_mid(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        block_in = cfg.ch * cfg.ch_mult[-1]
        res = cfg.grid_size
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _mid(block_in, cfg.dropout)
        levels: list[nn.Module] = []
        for i in reversed(range(len(cfg.ch_mult))):
            block_out = cfg.ch * cfg.ch_mult[i]
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _level(blocks, attns)
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)  # taming stores levels in resolution order
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_mid(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            h = _run_level(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ----- quantizers -----


class GumbelQuantize(nn.Module):
    """taming's GumbelQuantize, inference only: codes are the argmax of the 1x1-conv logits."""

    def __init__(self, in_channels: int, embed_dim: int, n_embed: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, n_embed, 1)
        self.embed = nn.Embedding(n_embed, embed_dim)

    def codes(
        self, z: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Argmax codes; with ``sample``, taming's eval-mode draw instead: its
        ``GumbelQuantize.forward`` runs ``F.gumbel_softmax(logits, tau=1, hard=True)`` even in
        eval, so the official ``img2idx`` gives the argmax of logits plus Gumbel noise, a
        different grid on each call."""
        logits = self.proj(z)
        if sample:
            u = torch.rand(logits.shape, generator=generator, device="cpu").to(logits.device)
            logits = logits - torch.log(-torch.log(u.clamp(1e-20, 1.0)).clamp(min=1e-20))
        return logits.argmax(dim=1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return self.embed(codes).permute(0, 3, 1, 2)


class NearestQuantize(nn.Module):
    """Nearest-codebook-entry VQ with straight-through gradients (VectorQuantizer2 names)."""

    def __init__(self, n_embed: int, embed_dim: int, beta: float) -> None:
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def codes(
        self, z: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if sample:
            raise ValueError("the nearest quantizer has no Gumbel sampling")
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        book = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t() + book.pow(2).sum(1)
        return dist.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return self.embedding(codes).permute(0, 3, 1, 2)

    def quantize(
        self, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Straight-through quantized z, codes, and the codebook/commitment losses."""
        codes = self.codes(z)
        zq = self.lookup(codes)
        losses = {
            "codebook_loss": F.mse_loss(zq, z.detach()),
            "commitment_loss": self.beta * F.mse_loss(z, zq.detach()),
        }
        return z + (zq - z).detach(), codes, losses


# ----- the tokenizer -----


@dataclass
class VQLoadReport:
    """What a checkpoint load did: keys loaded, keys ignored by name, and why."""

    loaded: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)


class VQTokenizer(nn.Module):
    """Encoder -> quant_conv -> quantizer; codes -> codebook -> post_quant_conv -> decoder."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        if cfg.quantizer == "gumbel":
            # taming builds GumbelQuantize(z_channels, ...) though it reads quant_conv's output.
            self.quantize: GumbelQuantize | NearestQuantize = GumbelQuantize(
                cfg.z_channels, cfg.embed_dim, cfg.n_embed
            )
        elif cfg.quantizer == "nearest":
            self.quantize = NearestQuantize(cfg.n_embed, cfg.embed_dim, cfg.beta)
        else:
            raise ValueError(f"unknown quantizer {cfg.quantizer!r}")

    @property
    def grid_size(self) -> int:
        return self.config.grid_size

    @property
    def num_codes(self) -> int:
        return self.config.n_embed

    @torch.no_grad()
    def encode(
        self,
        images: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> codes [B, h, w].

        Argmax by default: the same image always gives the same codes, so data shards are
        reproducible and a target is the quantizer's most likely grid. ``sample`` (Gumbel
        quantizer only) draws codes as the official ``img2idx`` does (see
        :meth:`GumbelQuantize.codes`)."""
        z = self.quant_conv(self.encoder(images.to(self._dtype)))
        return self.quantize.codes(z, sample=sample, generator=generator)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, h, w] -> [B, 3, H, W] in [-1, 1] (clamped)."""
        z = self.quantize.lookup(codes.long())
        return self.decoder(self.post_quant_conv(z)).clamp(-1, 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training pass of the nearest quantizer: reconstruction, codes and the losses."""
        if not isinstance(self.quantize, NearestQuantize):
            raise NotImplementedError("training is implemented for the 'nearest' quantizer")
        z = self.quant_conv(self.encoder(images))
        zq, codes, losses = self.quantize.quantize(z)
        recon = self.decoder(self.post_quant_conv(zq))
        losses["reconstruction_loss"] = F.mse_loss(recon, images)
        losses["loss"] = sum(losses.values())
        return {"reconstruction": recon, "codes": codes, **losses}

    def loss(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss`` = reconstruction MSE + codebook loss + beta * commitment loss, and its parts."""
        out = self(images)
        return {k: v for k, v in out.items() if k.endswith("loss")}

    def train_step(
        self, images: torch.Tensor, optimizer: torch.optim.Optimizer
    ) -> dict[str, float]:
        """One optimizer step on a batch; returns the detached losses."""
        self.train()
        losses = self.loss(images)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    @property
    def _dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def load_taming_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> VQLoadReport:
        """Strict load of a taming VQGAN state dict, ignoring its training losses (``loss.*``)."""
        report = VQLoadReport()
        kept = {}
        for key, value in state_dict.items():
            if key.startswith("loss."):
                report.ignored[key] = "training loss module (discriminator/perceptual)"
            else:
                kept[key] = value
        self.load_state_dict(kept, strict=True)
        report.loaded = sorted(kept)
        return report

    @classmethod
    def from_taming_checkpoint(
        cls,
        ckpt_path: str | Path,
        yaml_path: str | Path,
        sha256: str | None = None,
        yaml_sha256: str | None = None,
    ) -> tuple[VQTokenizer, VQLoadReport]:
        """Build from ``model.yaml`` and load ``last.ckpt`` (a Lightning checkpoint) with
        `load_lightning_state_dict`: no code in the file runs; each file's `sha256`, when
        given, is checked on the bytes that are then parsed."""
        cfg = config_from_taming_yaml(
            yaml_path, yaml_sha256, ckpt_path=str(ckpt_path), ckpt_sha256=sha256
        )
        model = cls(cfg)
        report = model.load_taming_state_dict(load_lightning_state_dict(ckpt_path, sha256))
        return model.eval().requires_grad_(False), report


class CheckpointRefused(ValueError):
    """A checkpoint that was not loaded: it changed since it was registered, or it names
    Python objects beyond tensors and the few a Lightning checkpoint holds."""


class _InertStandIn:
    """Takes the place of a class a Lightning checkpoint names (its callbacks' state is keyed
    by the callback class): accepts whatever the file passes and does nothing with it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


# The globals besides tensors that a PyTorch Lightning checkpoint (the taming VQGAN's
# `last.ckpt`) names, each read as an inert stand-in: `torch.load(weights_only=True)` refuses
# everything else before calling anything.
LIGHTNING_GLOBALS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "argparse.Namespace",
)


def read_verified(path: str | Path, expected: str | None) -> bytes:
    """A file's bytes, read once; refused when `expected` is given and their sha256 is not
    it. Callers parse these very bytes, so the file cannot change between check and load."""
    data = Path(path).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if expected is not None and actual != expected:
        raise CheckpointRefused(
            f"{Path(path).name}: sha256 {actual[:16]}... differs from the {expected[:16]}... "
            "recorded when it was registered; the file changed, so it is not loaded"
        )
    return data


def load_lightning_state_dict(
    path: str | Path, sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a Lightning (or plain) checkpoint's ``state_dict``, read with
    `torch.load(weights_only=True)` and `LIGHTNING_GLOBALS` as inert stand-ins: a pickle that
    names anything else (a `__reduce__` calling `os.system`) is refused unrun."""
    path = Path(path)
    data = read_verified(path, sha256)
    allowed = [(_InertStandIn, name) for name in LIGHTNING_GLOBALS]
    try:
        with torch.serialization.safe_globals(allowed):
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            named = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
        except Exception:  # noqa: BLE001 - only for the message
            named = []
        extra = sorted(set(named) - set(LIGHTNING_GLOBALS))
        shown = ", ".join(extra) if extra else str(exc).splitlines()[0]
        raise CheckpointRefused(
            f"{path.name}: refused: it names Python objects outside the allow-list ({shown}); "
            "nothing in it was run"
        ) from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointRefused(f"{path.name}: holds no state_dict of tensors")
    return dict(state)


def save_vq(vq: VQTokenizer, path: str | Path) -> Path:
    """Write a (trained) tokenizer as safetensors, its config in the metadata; atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    skip = ("ckpt_path", "yaml_path", "ckpt_sha256", "yaml_sha256")
    config = {k: v for k, v in asdict(vq.config).items() if k not in skip}
    tensors = {k: v.detach().cpu().contiguous() for k, v in vq.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"vq_config": json.dumps(config)})
    return path


# Bounds on the config a `save_vq` file declares, far above any real VQGAN (HealthGPT's: 128
# channels, multipliers (1, 1, 2, 4), 8192 codes of 256 dimensions, 256 pixels), so that the
# metadata of a small file cannot make the loader build a huge model.
VQ_INT_BOUNDS = {
    "ch": (1, 1024),
    "num_res_blocks": (0, 16),
    "z_channels": (1, 4096),
    "resolution": (1, 4096),
    "in_channels": (1, 16),
    "out_ch": (1, 16),
    "n_embed": (1, 1 << 18),
    "embed_dim": (1, 4096),
}
VQ_MAX_LEVELS = 8  # entries of ch_mult and of attn_resolutions
VQ_MAX_CH_MULT = 16
_SAVED_FIELDS = (*VQ_INT_BOUNDS, "ch_mult", "attn_resolutions", "dropout", "quantizer", "beta")


def checked_vq_config(values: Any, name: str) -> VQConfig:
    """The `VQConfig` a file declares, each field type-checked and bounded
    (`VQ_INT_BOUNDS`); anything else is a `CheckpointRefused` naming the file and field.
    A field the file leaves out takes the `VQConfig` default."""

    def refuse(why: str) -> CheckpointRefused:
        return CheckpointRefused(f"{name}: refused: its vq_config {why}")

    if not isinstance(values, Mapping):
        raise refuse(f"is a {type(values).__name__}, not a mapping")
    unknown = sorted(set(values) - set(_SAVED_FIELDS))
    if unknown:
        raise refuse(f"has unknown fields {unknown}")
    config: dict[str, Any] = {}
    for key, (low, high) in VQ_INT_BOUNDS.items():
        value = values.get(key, getattr(VQConfig, key))
        if type(value) is not int or not low <= value <= high:
            raise refuse(f"{key}={value!r}: must be an integer in {low}..{high}")
        config[key] = value
    for key, bound in (("ch_mult", VQ_MAX_CH_MULT), ("attn_resolutions", config["resolution"])):
        value = values.get(key, getattr(VQConfig, key))
        if (
            not isinstance(value, list | tuple)
            or len(value) > VQ_MAX_LEVELS
            or not all(type(v) is int and 0 < v <= bound for v in value)
        ):
            raise refuse(f"{key}={value!r}: must be at most {VQ_MAX_LEVELS} integers in 1..{bound}")
        config[key] = tuple(value)
    if not config["ch_mult"]:
        raise refuse("ch_mult is empty")
    for key, low, high in (("dropout", 0.0, 1.0), ("beta", 0.0, 100.0)):
        value = values.get(key, getattr(VQConfig, key))
        if type(value) not in (int, float) or not low <= value < high:
            raise refuse(f"{key}={value!r}: must be a number in [{low}, {high})")
        config[key] = float(value)
    quantizer = values.get("quantizer", VQConfig.quantizer)
    if quantizer not in ("gumbel", "nearest"):
        raise refuse(f"quantizer={quantizer!r}: must be 'gumbel' or 'nearest'")
    return VQConfig(**config, quantizer=quantizer)


def _safetensors_header(data: bytes, name: str) -> dict[str, Any]:
    """The JSON header of safetensors bytes, refused when it does not parse as one."""
    size = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if not 0 < size <= len(data) - 8:
        raise CheckpointRefused(f"{name}: not a safetensors file (header of {size} bytes)")
    try:
        header = json.loads(data[8 : 8 + size])
    except (ValueError, RecursionError):
        raise CheckpointRefused(f"{name}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointRefused(f"{name}: not a safetensors file (header is not an object)")
    return header


def load_vq(path: str | Path, sha256: str | None = None) -> VQTokenizer:
    """A tokenizer written by :func:`save_vq` (frozen, eval mode), loaded from the bytes
    whose `sha256` (when given) was checked.

    Before any weight is allocated, the config in the file's metadata is bounded
    (`checked_vq_config`) and the tensor shapes its header declares must be exactly those of
    that config's model (built on the meta device, which allocates nothing): the model built
    is then no larger than the tensors the file really holds."""
    name = Path(path).name
    data = read_verified(path, sha256)
    header = _safetensors_header(data, name)
    metadata = header.pop("__metadata__", None) or {}
    try:
        declared = json.loads(metadata["vq_config"])
    except (TypeError, KeyError, ValueError, RecursionError):
        raise CheckpointRefused(
            f"{name}: refused: no readable vq_config in its metadata (not written by save_vq)"
        ) from None
    config = checked_vq_config(declared, name)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in VQTokenizer(config).state_dict().items()}
    shapes = {
        key: tuple(info.get("shape", ())) if isinstance(info, dict) else None
        for key, info in header.items()
    }
    if shapes != expected:
        wrong = sorted(k for k in set(shapes) | set(expected) if shapes.get(k) != expected.get(k))
        shown = ", ".join(f"{k} {shapes.get(k)} != {expected.get(k)}" for k in wrong[:3])
        raise CheckpointRefused(
            f"{name}: refused: {len(wrong)} tensors do not match the model its vq_config "
            f"describes (file != model: {shown})"
        )
    tensors = load_safetensors(data)
    vq = VQTokenizer(replace(config, ckpt_path=str(path)))
    vq.load_state_dict(tensors, strict=True)
    return vq.eval().requires_grad_(False)


def build_vq_tokenizer(cfg: VQConfig) -> tuple[VQTokenizer, VQLoadReport | None]:
    """The preset's tokenizer: a :func:`save_vq` file or a taming checkpoint if ``ckpt_path``
    is set (the file's own config wins), else random weights."""
    if not cfg.ckpt_path:
        return VQTokenizer(cfg), None
    if not cfg.ckpt_sha256:
        raise CheckpointRefused(
            f"{Path(cfg.ckpt_path).name}: no sha256 recorded for it; register the checkpoint "
            "(its sha256 is verified on every load)"
        )
    if str(cfg.ckpt_path).endswith(".safetensors"):
        vq = load_vq(cfg.ckpt_path, cfg.ckpt_sha256)
        return vq, VQLoadReport(loaded=sorted(vq.state_dict()))
    if not cfg.yaml_path:
        raise ValueError("a taming checkpoint needs its model.yaml (yaml_path)")
    if not cfg.yaml_sha256:
        raise CheckpointRefused(
            f"{Path(cfg.yaml_path).name}: no sha256 recorded for it; register the checkpoint"
        )
    return VQTokenizer.from_taming_checkpoint(
        cfg.ckpt_path, cfg.yaml_path, cfg.ckpt_sha256, cfg.yaml_sha256
    )


# ----- PIL <-> tensor -----


VQ_PREPROCESS = ("pad", "stretch")


def images_to_tensor(
    images: list[Image.Image] | Image.Image, resolution: int, mode: str = "pad"
) -> torch.Tensor:
    """PIL images -> [B, 3, R, R] in [-1, 1], LANCZOS-resized.

    ``mode="pad"``: pad to square with black first (keeps the aspect ratio). ``"stretch"``:
    resize straight to R x R, as the official ``img2idx`` (taming_transformers/idx2img.py:
    ``TF.resize(img, (256, 256), LANCZOS)``) does; the released weights were trained on codes
    made that way."""
    if mode not in VQ_PREPROCESS:
        raise ValueError(f"mode must be one of {VQ_PREPROCESS}, got {mode!r}")
    if isinstance(images, Image.Image):
        images = [images]
    out = []
    for image in images:
        image = image.convert("RGB")
        side = max(image.size)
        if mode == "pad" and image.size != (side, side):
            square = Image.new("RGB", (side, side))
            square.paste(image, ((side - image.size[0]) // 2, (side - image.size[1]) // 2))
            image = square
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        out.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(out)


def tensor_to_images(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> RGB PIL images."""
    array = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy(), "RGB") for a in array]

"""Image metrics of the generation tables (SSIM, PSNR, MSE, LPIPS), with stated conventions.

Conventions (one place, applied to target and generated image alike):

- Grayscale, 8 bits, 256 x 256. A color image is converted with PIL's "L" mode, the ITU-R
  601-2 luma transform (L = 0.299 R + 0.587 G + 0.114 B). An image of another size is
  resized to 256 x 256 with bicubic resampling. The window (CT HU window, MRI scaling) is the
  one the shards were written with: nothing here re-windows.
- Data range: `ssim` and `psnr` take it as a required argument (no default, so no silent
  255 for [0, 1] data), and reject NaN input or values spanning more than the range. The
  pipeline scores 8-bit images with 255; MSE is on the
  0-255 scale (the paper's MSE ~30 at PSNR ~33 dB only fits that scale).
- SSIM: Wang et al. 2004 by default: 11 x 11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
  population covariance, mean over the pixels whose window fits inside the image.
  `window="uniform"` gives scikit-image's default instead (7 x 7 box, sample covariance).
  Tables print SSIM x 100.
- PSNR = 10 log10(255^2 / MSE) per image; identical images (MSE 0) count as `PSNR_CAP` dB so
  that a mean over images stays finite.
- LPIPS (AlexNet, `lpips` package) when the package and its weights are on disk; the gray
  image is repeated to three channels and scaled to [-1, 1]. Tables print LPIPS x 100, the
  scale at which the paper's values (12.02 for HealthGPT-M3) are plausible.

Implemented with numpy/scipy and checked against scikit-image's metrics in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, uniform_filter

SIZE = 256
DATA_RANGE = 255.0
PSNR_CAP = 100.0
SSIM_WINDOWS = ("gaussian", "uniform")
LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"


def to_gray_uint8(image: Image.Image | np.ndarray, size: int = SIZE) -> np.ndarray:
    """An 8-bit grayscale `size` x `size` array, by the conventions above."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array, got {image.dtype}")
        image = Image.fromarray(image)
    if image.mode not in ("L", "RGB", "RGBA", "P", "LA"):
        raise ValueError(f"image mode {image.mode!r}: metrics are defined on 8-bit images")
    gray = image.convert("L")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(gray, dtype=np.uint8)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def check_range(data_range: float, *arrays: np.ndarray) -> None:
    """Reject input the given data range cannot describe: NaN or infinite values, or values
    spanning more than `data_range` (uint8 data scored with 1.0). As in scikit-image, an
    explicit range is trusted otherwise: [-1, 1] data with 2.0, or a dark float image on the
    0-255 scale (all values <= 1) with 255."""
    if not data_range > 0 or not math.isfinite(data_range):
        raise ValueError(f"data_range must be positive and finite, got {data_range}")
    for array in arrays:
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise ValueError("image contains NaN or infinite values: metrics are undefined")
        low, high = float(np.min(array)), float(np.max(array))
        if high - low > data_range:
            raise ValueError(f"values in [{low}, {high}] do not fit data_range {data_range}")


def mse(a: np.ndarray, b: np.ndarray) -> float:
    x, y = _pair(a, b)
    return float(np.mean((x - y) ** 2))


def psnr(a: np.ndarray, b: np.ndarray, *, data_range: float) -> float:
    """PSNR in dB; `inf` for identical images (the caller caps it, see `PSNR_CAP`)."""
    check_range(data_range, a, b)
    error = mse(a, b)
    return math.inf if error == 0 else 10.0 * math.log10(data_range**2 / error)


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float, window: str = "gaussian") -> float:
    """Mean SSIM of two grayscale images (window conventions in the module docstring)."""
    check_range(data_range, a, b)
    x, y = _pair(a, b)
    if window == "gaussian":
        win = 11

        def smooth(z: np.ndarray) -> np.ndarray:
            return gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

        cov_norm = 1.0
    elif window == "uniform":
        win = 7

        def smooth(z: np.ndarray) -> np.ndarray:
            return uniform_filter(z, size=win, mode="reflect")

        cov_norm = win * win / (win * win - 1)
    else:
        raise ValueError(f"window must be one of {SSIM_WINDOWS}")
    if min(x.shape) < win:
        raise ValueError(f"images smaller than the {win}x{win} SSIM window")
    ux, uy = smooth(x), smooth(y)
    vx = cov_norm * (smooth(x * x) - ux * ux)
    vy = cov_norm * (smooth(y * y) - uy * uy)
    vxy = cov_norm * (smooth(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean(dtype=np.float64))


LpipsFn = Callable[[np.ndarray, np.ndarray], float]


def load_lpips() -> tuple[LpipsFn | None, str]:
    """An LPIPS function if it can run offline, else None and the reason it is skipped.

    The `lpips` package ships its linear-layer weights but fetches the AlexNet backbone from
    the internet on first use; it is only used when that file is already in torch's hub cache.
    """
    try:
        import lpips  # type: ignore[import-not-found]
        import torch
    except ImportError:
        return None, "LPIPS skipped: the `lpips` package (with torchvision) is not installed"
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILE
    if not backbone.is_file():
        return None, f"LPIPS skipped: AlexNet weights are not on disk ({backbone})"
    net = lpips.LPIPS(net="alex", verbose=False).eval()

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        def tensor(z: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(z.astype(np.float32) / 127.5 - 1.0)
            return t.expand(1, 3, *z.shape)

        with torch.no_grad():
            return float(net(tensor(a), tensor(b)).item())

    return distance, "LPIPS: AlexNet (lpips package), gray repeated to RGB, range [-1, 1]"


def image_metrics(
    target: np.ndarray,
    generated: np.ndarray,
    window: str = "gaussian",
    lpips_fn: LpipsFn | None = None,
) -> dict[str, float | None]:
    """SSIM (0-1), PSNR (dB, capped), MSE and LPIPS (0-1, or None) of one pair."""
    value = psnr(target, generated, data_range=DATA_RANGE)
    return {
        "ssim": ssim(target, generated, data_range=DATA_RANGE, window=window),
        "psnr": min(value, PSNR_CAP),
        "mse": mse(target, generated),
        "lpips": lpips_fn(target, generated) if lpips_fn is not None else None,
    }

import math

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from healthgpt.eval.metrics import (
    PSNR_CAP,
    image_metrics,
    load_lpips,
    mse,
    psnr,
    ssim,
    to_gray_uint8,
)


def noisy_pair(seed: int, shape=(64, 48), noise=30):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return a, b


def test_hand_computed_mse_and_psnr():
    a = np.full((16, 16), 100, np.uint8)
    b = np.full((16, 16), 110, np.uint8)
    assert mse(a, b) == 100.0
    assert psnr(a, b, data_range=255) == pytest.approx(10 * math.log10(255**2 / 100))  # 28.1308 dB
    half = a.copy()
    half[:8] = 120  # half the pixels off by 20: MSE = 400 / 2
    assert mse(a, half) == 200.0


def test_identical_images():
    a, _ = noisy_pair(0)
    assert ssim(a, a, data_range=255) == pytest.approx(1.0)
    assert psnr(a, a, data_range=255) == math.inf
    assert image_metrics(a, a)["psnr"] == PSNR_CAP


def test_ssim_of_a_constant_offset_by_hand():
    # Flat images: variances are 0, so SSIM is the luminance term (2xy + C1) / (x^2 + y^2 + C1).
    a = np.full((32, 32), 100, np.uint8)
    b = np.full((32, 32), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    assert ssim(a, b, data_range=255) == pytest.approx(expected)
    assert ssim(a, b, data_range=255, window="uniform") == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_scikit_image(seed):
    a, b = noisy_pair(seed)
    gaussian = structural_similarity(
        a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(a, b, data_range=255) == pytest.approx(gaussian, abs=1e-12)
    assert ssim(a, b, data_range=255, window="uniform") == pytest.approx(
        structural_similarity(a, b, data_range=255), abs=1e-12
    )
    assert psnr(a, b, data_range=255) == pytest.approx(
        peak_signal_noise_ratio(a, b, data_range=255)
    )
    assert mse(a, b) == pytest.approx(mean_squared_error(a, b))


def test_windows_differ_and_unknown_window_fails():
    a, b = noisy_pair(3)
    assert ssim(a, b, data_range=255) != ssim(a, b, data_range=255, window="uniform")
    with pytest.raises(ValueError, match="window"):
        ssim(a, b, data_range=255, window="box")


def test_gray_conversion_is_itu_601_luma_and_resizes_to_256():
    red = Image.new("RGB", (256, 256), (255, 0, 0))
    assert to_gray_uint8(red)[0, 0] == 76  # 0.299 * 255
    small = Image.new("L", (64, 64), 200)
    out = to_gray_uint8(small)
    assert out.shape == (256, 256) and out.dtype == np.uint8 and out[100, 100] == 200
    with pytest.raises(ValueError, match="8-bit"):
        to_gray_uint8(Image.new("I;16", (8, 8)))


def test_lpips_is_skipped_with_a_reason_when_not_runnable_offline():
    fn, note = load_lpips()
    if fn is None:
        assert note.startswith("LPIPS skipped:")
    else:  # installed with weights on disk: identical images are at distance 0
        a, _ = noisy_pair(4, shape=(64, 64))
        assert fn(a, a) == pytest.approx(0.0, abs=1e-6)


def test_data_range_is_explicit_and_a_range_too_small_is_rejected():
    """Defect 6: with a default range of 255, [0, 1] float images were silently scored as
    nearly identical (PSNR ~ 95 dB for a clearly different pair)."""
    a8, b8 = noisy_pair(5)
    a, b = a8 / 255.0, b8 / 255.0
    with pytest.raises(TypeError):
        psnr(a, b)  # no silent default
    with pytest.raises(TypeError):
        ssim(a, b)
    with pytest.raises(ValueError, match="do not fit"):
        ssim(a8, b8, data_range=1.0)
    assert psnr(a, b, data_range=1.0) == pytest.approx(
        peak_signal_noise_ratio(a, b, data_range=1.0)
    )
    assert ssim(a, b, data_range=1.0, window="uniform") == pytest.approx(
        structural_similarity(a, b, data_range=1.0), abs=1e-12
    )


def test_explicit_range_is_trusted_like_scikit_image_and_nan_is_rejected():
    """A dark float 0-255 image (max <= 1) with data_range 255 and [-1, 1] data with 2.0 were
    rejected; NaN input gave NaN scores instead of an error."""
    dark_a, dark_b = np.full((32, 32), 0.9), np.full((32, 32), 0.5)
    assert psnr(dark_a, dark_b, data_range=255) == pytest.approx(
        peak_signal_noise_ratio(dark_a, dark_b, data_range=255)
    )
    a8, b8 = noisy_pair(5)
    a, b = a8 / 127.5 - 1.0, b8 / 127.5 - 1.0
    assert psnr(a, b, data_range=2.0) == pytest.approx(
        peak_signal_noise_ratio(a, b, data_range=2.0)
    )
    assert ssim(a, b, data_range=2.0, window="uniform") == pytest.approx(
        structural_similarity(a, b, data_range=2.0), abs=1e-12
    )
    nan = np.full((32, 32), np.nan)
    with pytest.raises(ValueError, match="NaN"):
        ssim(nan, dark_b, data_range=1.0)

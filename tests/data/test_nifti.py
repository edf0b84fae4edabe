"""Volume handling: canonical orientation, resampling, geometry checks, slicing rules."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from healthgpt.data.decode.nifti import (
    Volume,
    check_same_geometry,
    display_slice,
    foreground,
    kept_slices,
    load_volume,
    load_volume_bytes,
    resample,
    to_uint8,
    volume_slices,
)
from healthgpt.data.samples.brain import flip_storage
from healthgpt.data.sources.base import BadInput, ReaderOptions

ANATOMICAL = Path(data_path) / "anatomical.nii"  # real 2 mm T1, stored LAS
EXAMPLE_4D = Path(data_path) / "example4d.nii.gz"


def save(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def slices(volume: Volume, **options) -> list[tuple[int, bytes]]:
    return [(i, s.tobytes()) for i, s in volume_slices(volume, "MRI", ReaderOptions(**options))]


def test_volume_is_reoriented_to_ras():
    volume = load_volume(ANATOMICAL)
    assert nib.aff2axcodes(nib.load(ANATOMICAL).affine) == ("L", "A", "S")
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    assert volume.spacing == (2.0, 2.0, 2.0) and volume.data.dtype == np.float32


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_flipped_copy_gives_identical_slices(tmp_path, axis):
    image = nib.load(ANATOMICAL)
    data, affine = flip_storage(np.asarray(image.dataobj), image.affine, axis=axis)
    flipped = load_volume(save(data, affine, tmp_path / "flipped.nii.gz"))
    original = load_volume(ANATOMICAL)
    np.testing.assert_array_equal(flipped.data, original.data)
    np.testing.assert_allclose(flipped.affine, original.affine)
    assert flipped.grid_id == original.grid_id
    for slice_axis in (0, 1, 2):
        assert slices(flipped, slice_axis=slice_axis) == slices(original, slice_axis=slice_axis)


def test_permuted_axes_copy_gives_identical_slices(tmp_path):
    image = nib.load(ANATOMICAL)
    data = np.asarray(image.dataobj).transpose(2, 0, 1)  # stored as (z, x, y)
    perm = np.eye(4)[[2, 0, 1, 3]].T  # new voxel (k, i, j) -> old (i, j, k)
    permuted = load_volume(save(data, image.affine @ perm, tmp_path / "permuted.nii"))
    np.testing.assert_array_equal(permuted.data, load_volume(ANATOMICAL).data)


def test_display_orientation_is_radiological():
    data = np.zeros((10, 12, 3), np.float32)
    data[9, 11, 1] = 1.0  # patient's far right (x high), far anterior (y high)
    image = display_slice(data, 2, 1)
    assert image.shape == (12, 10)
    assert image[0, 0] == 1.0  # anterior at the top, patient's right on the viewer's left


def test_resample_changes_grid_not_position():
    volume = load_volume(ANATOMICAL)
    coarse = resample(volume, (4.0, 4.0, 4.0))
    assert coarse.spacing == pytest.approx((4.0, 4.0, 4.0))
    assert coarse.grid_id != volume.grid_id
    assert coarse.shape == tuple(round(n / 2) for n in volume.shape)
    np.testing.assert_allclose(coarse.affine[:3, 3], volume.affine[:3, 3])
    assert coarse.data.mean() == pytest.approx(volume.data.mean(), rel=0.1)
    labels = resample(Volume((volume.data > 50).astype(np.float32), volume.affine), (4, 4, 4), True)
    assert set(np.unique(labels.data)) <= {0.0, 1.0}


def test_matching_geometry_passes_and_mismatch_is_refused():
    volume = load_volume(ANATOMICAL)
    check_same_geometry({"mr": volume, "ct": Volume(volume.data * 2, volume.affine.copy())})
    with pytest.raises(BadInput, match="geometry mismatch: ct shape"):
        check_same_geometry({"mr": volume, "ct": resample(volume, (3.0, 3.0, 3.0))})
    shifted = volume.affine.copy()
    shifted[0, 3] += 1.0
    with pytest.raises(BadInput, match="geometry mismatch: mask affine differs from mr"):
        check_same_geometry({"mr": volume, "mask": Volume(volume.data, shifted)})


def test_truncated_nifti_gz_is_refused(tmp_path):
    data = gzip.compress(ANATOMICAL.read_bytes(), mtime=0)
    cut = tmp_path / "DOE_JANE" / "t1.nii.gz"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="truncated NIfTI") as info:
        load_volume(cut)
    assert "DOE_JANE" not in str(info.value)
    with pytest.raises(BadInput, match="truncated NIfTI"):
        load_volume_bytes(data[: len(data) // 2], "t1.nii.gz")
    assert load_volume_bytes(data, "t1.nii.gz").shape == load_volume(ANATOMICAL).shape


def test_garbage_is_refused(tmp_path):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a volume")
    with pytest.raises(BadInput, match="unreadable NIfTI"):
        load_volume(junk)


def test_4d_uses_the_requested_volume():
    first, second = load_volume(EXAMPLE_4D, 0), load_volume(EXAMPLE_4D, 1)
    assert first.shape == (128, 96, 24) and not np.array_equal(first.data, second.data)
    with pytest.raises(BadInput, match="has 2 volumes"):
        load_volume(EXAMPLE_4D, 5)


def test_empty_slice_rule():
    data = np.zeros((10, 10, 6), np.float32)
    for k in range(6):  # slice k has k * 10 % foreground
        data[:k, :, k] = 100.0
    mask = foreground(data)
    assert [round(f, 2) for f in mask.mean(axis=(0, 1))] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert kept_slices(mask, 2, 1, 0.25) == [3, 4, 5]
    assert kept_slices(mask, 2, 2, 0.25) == [4]
    volume = Volume(data, np.eye(4))
    options = {"min_foreground_fraction": 0.25}
    assert [i for i, _ in slices(volume, **options)] == [3, 4, 5]


def test_foreground_ignores_low_background_noise():
    rng = np.random.default_rng(0)
    data = rng.normal(10.0, 2.0, (20, 20, 4)).astype(np.float32)  # noisy background
    data[5:15, 5:15, 2] = 500.0
    fractions = foreground(data).mean(axis=(0, 1))
    assert fractions[2] == pytest.approx(0.25) and fractions[[0, 1, 3]].max() == 0


def test_mr_normalization_is_per_volume_not_per_slice():
    ramp = np.linspace(1.0, 100.0, 400, dtype=np.float32).reshape(20, 20)
    data = np.stack([ramp, ramp / 2], axis=2)  # the second slice is half as bright
    pixels = to_uint8(Volume(data, np.eye(4)), "MRI", ReaderOptions())
    assert pixels[..., 0].max() == 255 and 110 < pixels[..., 1].max() < 140


def test_ct_uses_the_hu_window():
    data = np.array([-2000.0, -1000.0, 0.0, 1000.0, 3000.0], np.float32).reshape(5, 1, 1)
    pixels = to_uint8(Volume(data, np.eye(4)), "CT", ReaderOptions(ct_window=(-1000, 1000)))
    assert pixels.ravel().tolist() == [0, 0, 128, 255, 255]

"""The catalog of real images in PyPI packages, and the questions it makes true."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import numpy as np
import pydicom
import pytest
import skimage.data
from PIL import Image
from pydicom.data import get_testdata_file

from healthgpt.data.decode.dicom import normalize_body_part
from healthgpt.data.samples import catalog
from healthgpt.data.samples.questions import MODALITY_WORDS, image_questions
from healthgpt.data.schema import MODALITIES
from healthgpt.data.vocab import normalize_modality


def digests() -> dict[str, str]:
    return {i.name: hashlib.sha256(i.array.tobytes()).hexdigest() for i in catalog.real_images()}


def test_catalog_covers_the_modalities_the_samples_need():
    images = catalog.real_images()
    assert len(images) == len(catalog.DICOM_FILES) + len(catalog.SKIMAGE_IMAGES)
    assert {i.modality for i in images} >= {
        "CT",
        "MRI",
        "X-Ray",
        "Ultrasound",
        "Nuclear Medicine",
        "Fundus",
        "Pathology",
        "Microscopy",
    }
    for image in images:
        assert image.modality in MODALITIES
        assert image.array.dtype == np.uint8
        assert image.array.ndim == 2 or image.array.shape[2] == 3
        assert image.array.max() > image.array.min(), f"{image.name} is blank"


def test_dicom_facts_agree_with_the_files_own_headers():
    for name, (file_name, frame) in catalog.DICOM_FILES.items():
        image = catalog.get(name)
        header = pydicom.dcmread(get_testdata_file(file_name), stop_before_pixels=True)
        assert image.modality == normalize_modality(header.Modality)
        assert image.body_part == normalize_body_part(header.get("BodyPartExamined"))
        assert image.array.shape[:2] == (header.Rows, header.Columns)
        assert image.is_color == (not header.PhotometricInterpretation.startswith("MONO"))
        assert image.facts["n_frames"] == int(header.get("NumberOfFrames", 1) or 1) > frame
        if image.view:
            assert image.view == header.ViewPosition


def test_questions_are_true_by_the_header():
    for image in catalog.real_images():
        answers = {qa.question: qa.answer for qa in image_questions(image)}
        assert (
            answers["What imaging modality was used to acquire this image?"]
            == (MODALITY_WORDS[image.modality])
        )
        assert answers["Is this image in color?"] == ("yes" if image.is_color else "no")
        assert answers["How many color channels does this image have?"] == image.channels
        if "Which part of the body is shown in this image?" in answers:
            assert answers["Which part of the body is shown in this image?"] == image.body_part
            assert answers[f"Is this an image of the {image.body_part}?"] == "yes"
        for qa in image_questions(image):
            assert not qa.closed or qa.answer in ("yes", "no")


def test_chest_radiograph_is_a_pa_chest_cr():
    chest = catalog.get("cr_chest_pa")
    assert (chest.modality, chest.body_part, chest.view) == ("X-Ray", "chest", "PA")


def test_catalog_is_cached_deterministic_and_offline(monkeypatch):
    before = digests()
    assert catalog.real_images() is catalog.real_images()

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    catalog.real_images.cache_clear()
    try:
        assert digests() == before
    finally:
        catalog.real_images.cache_clear()


def test_skimage_images_are_bundled_in_the_wheel_not_downloaded():
    data_dir = Path(skimage.data.__file__).parent
    bundled = {"retina": "retina.jpg", "immunohistochemistry": "ihc.png", "cell": "cell.png"}
    bundled["microaneurysms"] = "microaneurysms.png"
    for function, *_ in catalog.SKIMAGE_IMAGES.values():
        assert (data_dir / bundled[function]).is_file(), function


def test_write_jpeg_bounds_size_and_is_deterministic(tmp_path):
    chest = catalog.get("cr_chest_pa")
    first = catalog.write_jpeg(chest, tmp_path / "a.jpg", max_side=300)
    second = catalog.write_jpeg(chest, tmp_path / "b.jpg", max_side=300)
    assert first.read_bytes() == second.read_bytes()
    with Image.open(first) as image:
        assert max(image.size) == 300
    small = catalog.write_jpeg(catalog.get("mr_small"), tmp_path / "c.jpg", max_side=300)
    with Image.open(small) as image:
        assert image.size == (64, 64)  # never upscaled


def test_unknown_name_raises():
    with pytest.raises(KeyError, match="no catalog image"):
        catalog.get("does-not-exist")

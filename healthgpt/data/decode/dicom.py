"""DICOM decoding for display: pixels through pydicom's decoders and LUT functions, 8-bit out.

What a frame goes through, in the order DICOM PS3.3 C.11 prescribes:

1. decode (native or compressed; the pylibjpeg plugins cover JPEG baseline/extended/lossless,
   JPEG-LS, JPEG 2000 and RLE; pydicom converts YBR colour to RGB while decoding);
2. modality LUT / rescale slope and intercept (CT becomes Hounsfield units);
3. a fixed HU window for CT (one window for every CT in the mixture, not whatever the
   scanner stored), else the header's VOI LUT or window, else the file's min-max;
4. MONOCHROME1 inversion, so bone is always bright.

Pixels can show names and dates (DICOM PS3.15 Clean Pixel Data): files flagged
BurnedInAnnotation YES are refused, and so are the classes and devices `deid.BURNED_IN_RULES`
names (ultrasound, secondary capture, screen captures, ...) unless
`options.burned_in_reviewed`; the reason names the rule.

Only allow-listed technical attributes (`deid.ALLOWED_KEYWORDS`) leave this module, in
`DicomImage.facts`, and only values of their vocabulary (`deid.vocabulary_value`, UID
syntax, numbers); the rest of the header, where PHI lives, is never returned, and header
strings are cut out of every error message.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from healthgpt.data.decode.deid import (
    ALLOWED_KEYWORDS,
    UNKNOWN,
    VOCABULARIES,
    burned_in_rule,
    is_uid,
    pseudonym,
    vocabulary_value,
)
from healthgpt.data.decode.imaging import scale_to_uint8
from healthgpt.data.errors import BadInput
from healthgpt.data.limits import Limits, check, check_working, count_inflated
from healthgpt.data.options import ReaderOptions
from healthgpt.data.vocab import normalize_body_part as body_region
from healthgpt.data.vocab import normalize_modality

log = logging.getLogger(__name__)

DEFAULT_CT_WINDOW = (-160.0, 240.0)
"""HU (lo, hi) for 2D CT: window centre 40, width 400, the usual soft-tissue window.

`ReaderOptions.ct_window` is the volume default (full -1000..1000 range for CT<->MRI
synthesis); 2D DICOM CT uses this one unless `options.extra["dicom_ct_window"]` says otherwise.
"""

# Modalities whose pixel data is not a picture of anatomy (label maps, dose grids, plans).
NON_ANATOMICAL_MODALITIES = frozenset({"SEG", "RTDOSE", "RTSTRUCT", "RTPLAN", "REG", "PR", "KO"})

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Header keyword -> key in `facts`. Every key here must be in deid.ALLOWED_KEYWORDS.
FACT_KEYS = {
    "ViewPosition": "view_position",
    "PhotometricInterpretation": "photometric",
    "Rows": "rows",
    "Columns": "columns",
    "NumberOfFrames": "n_frames",
    "PixelSpacing": "pixel_spacing",
    "SliceThickness": "slice_thickness",
    "ImageType": "image_type",
    "PatientOrientation": "patient_orientation",
    "MRAcquisitionType": "mr_acquisition_type",
    "ScanningSequence": "scanning_sequence",
}
assert set(FACT_KEYS) <= ALLOWED_KEYWORDS

_NUMERIC_FACTS = frozenset({"Rows", "Columns", "NumberOfFrames", "PixelSpacing", "SliceThickness"})
_TRUNCATION_HINTS = ("end of file", "unexpected end", "truncated", "less than expected")


@dataclass(frozen=True)
class DicomImage:
    """A decoded DICOM file, ready for PNG encoding, with no PHI attached."""

    frames: list[np.ndarray]
    modality: str
    body_part: str | None
    facts: dict[str, Any] = field(default_factory=dict)
    subject_id: str | None = None  # salted pseudonym of PatientID (options.deid_salt)


def read_dicom(
    path: Path, options: ReaderOptions, ct_window: tuple[float, float] | None = None
) -> DicomImage:
    """Decode one DICOM file into display-ready uint8 frames; unusable files raise `BadInput`.

    `ct_window` (HU lo, hi) overrides `options.extra["dicom_ct_window"]`, which overrides
    `DEFAULT_CT_WINDOW`.
    """
    path = Path(path)
    if not options.deid_salt:
        raise ValueError("read_dicom needs options.deid_salt (see deid.salt_for_source)")
    parsed: list[Dataset] = []
    try:
        return _read(path, options, ct_window, parsed)
    except BadInput as exc:  # decoder text in it was cut where it was quoted
        raise BadInput(_without_path(str(exc), path)) from exc
    except Exception as exc:  # noqa: BLE001 - LUT/decoder edge cases; keep the path out
        message = _without_path(f"{type(exc).__name__}: {exc}", path)
        raise BadInput(_without_header_text(message, parsed)) from exc


def _without_path(message: str, path: Path) -> str:
    """Reasons end up in the quarantine table; a hospital path can carry a patient's name."""
    for form in sorted({str(path), path.as_posix(), str(path.resolve())}, key=len, reverse=True):
        message = message.replace(form, "<file>")
    return message


def _without_header_text(message: str, parsed: list[Dataset] | tuple[Dataset, ...]) -> str:
    """Decoder messages can quote header values (a transfer syntax, a name in a bad
    element): every header string of 3+ characters is cut out, except allow-listed values
    of their vocabulary (so "SOP class 12-lead ECG ..." keeps its words)."""
    for ds in parsed:
        values = set()
        for dataset in (getattr(ds, "file_meta", None), ds):
            for element in dataset or ():
                if element.VR == "SQ":
                    continue
                for value in _values_of(element.value):
                    if not _vocabulary_term(element.keyword, value):
                        values.add(str(value).strip())
        for value in sorted((v for v in values if len(v) >= 3), key=len, reverse=True):
            message = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", "<header value>", message)
    return message


def _vocabulary_term(keyword: str, value: object) -> bool:
    """Is `value` an allow-listed attribute's defined term (or a number, a registered UID,
    a modality code), i.e. something that cannot be free text?"""
    if keyword not in ALLOWED_KEYWORDS:
        return False
    if keyword in VOCABULARIES or keyword == "PatientOrientation":
        return vocabulary_value(keyword, value) not in (None, UNKNOWN)
    if keyword == "SOPClassUID":
        return not uid_name(value, "SOP class").startswith(("unknown", "invalid"))
    return _number(value) is not None


def _values_of(value: object) -> list[object]:
    if isinstance(value, bytes | bytearray):
        return []
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _read(
    path: Path,
    options: ReaderOptions,
    ct_window: tuple[float, float] | None,
    parsed: list[Dataset],
) -> DicomImage:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = _read_dataset(path, options.limits)
        parsed.append(ds)
        _check_warnings(caught, ds)
        code = str(ds.get("Modality", "") or "").strip().upper()
        _require_pixels(ds, code)
        rule = burned_in_rule(ds, reviewed=options.burned_in_reviewed)
        if rule:
            raise BadInput(
                f"burned-in text rule {rule!r}: pixels may show names or dates "
                "(burned_in_reviewed accepts them once checked)"
                if rule != "BurnedInAnnotation YES"
                else "burned-in annotation (BurnedInAnnotation YES): pixels may carry PHI"
            )
        check_pixel_size(ds, options.limits)
        pixels = _decode(ds, caught)
    _check_warnings(caught, ds)
    frames = _split_frames(ds, pixels)
    if str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME"):
        window = _ct_window(options, ct_window) if code == "CT" else None
        frames = _monochrome_frames(ds, frames, window)
    else:
        frames = [_color_frame(ds, frame) for frame in frames]
    return DicomImage(
        frames=frames,
        modality=normalize_modality(code),
        body_part=normalize_body_part(ds.get("BodyPartExamined")),
        facts=dicom_facts(ds, len(frames)),
        subject_id=_subject_pseudonym(ds, options.deid_salt),
    )


def normalize_body_part(value: object) -> str | None:
    """BodyPartExamined ("HEAD", "THORAX", "CSPINE") as the coarse lowercase region the other
    sources use ("head", "chest", "spine"); None when absent, "unknown" when not a defined
    term (free text such as a name never becomes a body part)."""
    term = vocabulary_value("BodyPartExamined", value)
    if term is None or term == UNKNOWN:
        return term
    return body_region(term)


def dicom_facts(ds: Dataset, n_frames: int) -> dict[str, Any]:
    """Allow-listed technical header values as JSON-ready Python values, each checked
    against its vocabulary: numbers stay numbers, coded values their defined terms, and
    anything else becomes "unknown"."""
    facts: dict[str, Any] = {}
    for keyword, key in FACT_KEYS.items():
        value = _fact(keyword, ds.get(keyword))
        if value not in (None, "", []):
            facts[key] = value
    facts["n_frames"] = n_frames
    if "SOPClassUID" in ds:
        facts["sop_class"] = _sop_class_name(ds)
    return facts


def _fact(keyword: str, value: object) -> Any:
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        items = [_fact(keyword, v) for v in value]
        return [v for v in items if v is not None]
    if keyword in _NUMERIC_FACTS:
        return _number(value)
    if keyword in VOCABULARIES or keyword == "PatientOrientation":
        return vocabulary_value(keyword, value)
    raise AssertionError(f"{keyword} has no vocabulary")  # every FACT_KEYS entry needs one


def _subject_pseudonym(ds: Dataset, salt: str) -> str | None:
    patient_id = str(ds.get("PatientID", "") or "").strip()
    return pseudonym(patient_id, salt, prefix="subj") if patient_id else None


def _number(value: object) -> int | float | None:
    """IS/DS values (pydicom's int and float subclasses) as plain numbers; text is dropped."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if np.isfinite(value) else None
    return None


def _sop_class_name(ds: Dataset) -> str:
    """The SOP class by its registered name; a private or malformed UID is not echoed."""
    return uid_name(ds.get("SOPClassUID"), "SOP class")


def uid_name(uid: object, kind: str) -> str:
    """A UID's registered name (pydicom's dictionary), else "unknown <kind>" for a private
    UID of valid syntax, else "invalid <kind>": never the value itself."""
    text = str(uid or "").strip()
    if not is_uid(text):
        return f"invalid {kind}"
    name = getattr(UID(text), "name", "") or ""
    return name if name and name != text else f"unknown {kind}"


def check_pixel_size(ds: Dataset, limits: Limits) -> None:
    """Refuse pixel data that would decode to more than the limits allow, from the header
    (rows x columns per frame; rows x columns x frames x samples x bits in all), before any
    decoder allocates it."""
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    check(
        "max_image_pixels",
        rows * columns,
        limits.max_image_pixels,
        f"DICOM declares {rows} x {columns} =",
    )
    values = math.prod((rows, columns, max(frames, 1), max(samples, 1)))
    decoded = values * max(bits, 1) // 8
    check(
        "max_decompressed_bytes",
        decoded,
        limits.max_decompressed_bytes,
        f"DICOM pixel data ({rows} x {columns} x {frames} frames x {samples} samples x "
        f"{bits} bits) decodes to",
    )
    check_working(
        dicom_working_bytes(values, rows * columns * max(samples, 1), bits),
        limits,
        f"decoding DICOM pixel data ({rows} x {columns} x {frames} frames x {samples} "
        f"samples x {bits} bits)",
    )


def dicom_working_bytes(values: int, frame_values: int, bits: int) -> int:
    """Bytes decoding `values` samples of `bits` bits holds at its peak: the packed pixel
    data, the decoded array at its unpacked dtype (1-bit data unpacks 8x to uint8, 12-bit to
    uint16), the float64 modality-LUT copy of every frame, one frame's float32 normalisation
    copies, and the uint8 output."""
    unpacked = 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8
    packed = values * max(bits, 1) // 8
    return packed + values * (unpacked + 8 + 1) + frame_values * 4 * 4


def _check_deflated(path: Path, limits: Limits) -> None:
    """A deflated dataset (transfer syntax 1.2.840.10008.1.2.1.99) is inflated whole by the
    parser: count what it inflates to first, in bounded steps, and refuse one over the
    limit before parsing."""
    try:
        with open(path, "rb") as handle:
            read_preamble(handle, False)
            meta = _read_file_meta_info(handle)
            if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
                return
            count_inflated(
                handle, limits.max_decompressed_bytes, "deflated DICOM", wbits=-zlib.MAX_WBITS
            )
    except BadInput:
        raise
    except Exception:  # noqa: BLE001 - no preamble or meta: the parser below decides
        return


def _read_dataset(path: Path, limits: Limits) -> Dataset:
    """Parse the file; accept preamble-less DICOM only if it has image-module attributes."""
    if not path.is_file():
        raise BadInput("DICOM file missing")
    if path.stat().st_size == 0:
        raise BadInput("not a DICOM file: empty (0 bytes)")
    _check_deflated(path, limits)
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass
    except Exception as exc:  # noqa: BLE001 - any parser failure means a corrupt header
        raise BadInput(f"corrupt DICOM header: {type(exc).__name__}: {exc}") from exc
    try:
        ds = pydicom.dcmread(path, force=True)
        if "SOPClassUID" in ds or ("PixelData" in ds and "Rows" in ds):
            _infer_transfer_syntax(ds)
            return ds
    except Exception:  # noqa: BLE001 - a forced parse of a non-DICOM file fails any which way
        pass
    raise BadInput("not a DICOM file (no DICM prefix and no DICOM header elements)")


def _infer_transfer_syntax(ds: Dataset) -> None:
    """Files without file meta (old exports) are native; record the encoding the parser saw
    so the pixel decoders know the transfer syntax."""
    if ds.file_meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _require_pixels(ds: Dataset, code: str) -> None:
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise BadInput(f"non-image DICOM (SOP class {_sop_class_name(ds)})")
    if code in NON_ANATOMICAL_MODALITIES:
        raise BadInput(f"non-anatomical DICOM image (modality {code}, {_sop_class_name(ds)})")


def _decode(ds: Dataset, caught: list[warnings.WarningMessage]) -> np.ndarray:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        name = uid_name(syntax, "transfer syntax")
        message = _without_header_text(f"{type(exc).__name__}: {exc}", (ds,))
        if _truncation_warning(caught) or "less than expected" in message:
            raise BadInput(f"truncated DICOM: pixel data incomplete ({message})") from exc
        raise BadInput(f"undecodable pixel data ({name}): {message}") from exc


def _truncation_warning(caught: list[warnings.WarningMessage]) -> str | None:
    for warning in caught:
        text = str(warning.message)
        if any(hint in text.lower() for hint in _TRUNCATION_HINTS):
            return text
    return None


def _check_warnings(caught: list[warnings.WarningMessage], ds: Dataset) -> None:
    """A file that decoded but made pydicom report truncation is still refused."""
    truncated = _truncation_warning(caught)
    if truncated:
        raise BadInput(f"truncated DICOM: {_without_header_text(truncated, (ds,))}")
    for warning in caught:
        log.debug("pydicom: %s", warning.message)


def _split_frames(ds: Dataset, pixels: np.ndarray) -> list[np.ndarray]:
    """Frames as a list: pixel_array has a leading frame axis only when NumberOfFrames > 1."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames > 1:
        return [pixels[i] for i in range(pixels.shape[0])]
    return [pixels]


def _ct_window(options: ReaderOptions, override: tuple[float, float] | None) -> tuple[float, float]:
    lo, hi = override or options.extra.get("dicom_ct_window", DEFAULT_CT_WINDOW)
    if hi <= lo:
        raise ValueError(f"CT window must have lo < hi, got {(lo, hi)}")
    return float(lo), float(hi)


def _monochrome_frames(
    ds: Dataset, frames: list[np.ndarray], ct_window: tuple[float, float] | None
) -> list[np.ndarray]:
    """Modality LUT, then CT window / header VOI / min-max over the file, then MONOCHROME1."""
    views = [_frame_view(ds, i) for i in range(len(frames))]
    values = [apply_modality_lut(frame, view) for frame, view in zip(frames, views, strict=True)]
    if ct_window is not None:
        out = [scale_to_uint8(v, *ct_window) for v in values]
    elif any(_has_voi(view) for view in views):
        out = [_apply_header_voi(v, view) for v, view in zip(values, views, strict=True)]
    else:
        lo = float(min(np.min(v) for v in values))
        hi = float(max(np.max(v) for v in values))
        out = [scale_to_uint8(v, lo, hi) for v in values]
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        out = [255 - frame for frame in out]
    return out


def _has_voi(view: Dataset) -> bool:
    return "VOILUTSequence" in view or ("WindowCenter" in view and "WindowWidth" in view)


def _apply_header_voi(values: np.ndarray, view: Dataset) -> np.ndarray:
    """pydicom's VOI LUT or window, rescaled from its output range to 8 bits.

    The output range is the LUT's value range, or for a window what pydicom maps values far
    below and above the window to.
    """
    try:
        if "VOILUTSequence" in view:
            lut = view.VOILUTSequence[0].LUTData
            bounds = np.asarray(lut if isinstance(lut, MultiValue | list) else [lut])
            values = np.rint(values).astype(np.int64)  # a LUT indexes integers
        else:
            bounds = apply_voi_lut(np.array([-1e12, 1e12]), view, index=0)
        shown = apply_voi_lut(values, view, index=0)
    except (ValueError, IndexError, TypeError) as exc:
        log.debug("ignoring unusable VOI in header: %s", exc)
        return scale_to_uint8(values)
    return scale_to_uint8(shown, float(np.min(bounds)), float(np.max(bounds)))


_VIEW_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsStored",
    "BitsAllocated",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)
_GROUP_SEQUENCES = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def _frame_view(ds: Dataset, index: int) -> Dataset:
    """The LUT-relevant attributes of one frame, with enhanced multi-frame functional groups
    (shared, then per-frame) folded in; pydicom's LUT functions read only the top level."""
    view = Dataset()
    for keyword in _VIEW_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    groups = []
    if "SharedFunctionalGroupsSequence" in ds:
        groups.extend(ds.SharedFunctionalGroupsSequence[:1])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for sequence in _GROUP_SEQUENCES:
            for item in group.get(sequence, [])[:1]:
                for element in item:
                    if element.keyword in _VIEW_KEYWORDS:
                        view[element.keyword] = element
    return view


def _color_frame(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """RGB (pydicom already converted YBR) or palette colour, as uint8 HxWx3."""
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        if frame.max() < 256:  # some writers put 8-bit entries in a "16-bit" palette
            bits = 8
        return scale_to_uint8(frame, 0, 2**bits - 1)
    if frame.dtype == np.uint8:
        return frame
    bits = int(ds.get("BitsStored", 8 * frame.dtype.itemsize))
    return scale_to_uint8(frame, 0, 2**bits - 1)

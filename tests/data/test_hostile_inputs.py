"""Hostile and broken input: one test per case, each asserting what happens to it.

Outcomes asserted: a quarantine row whose reason names the problem (and the limit), a clear
refusal (no traceback, the file named), the previous output intact, or the unrelated file
intact. Oversize cases run in a subprocess that reports its peak memory above the baseline
after imports (`resource.getrusage`), bounded by `MEMORY_BOUND_MB`; the hostile files are
small on disk, and where a case would need gigabytes to show itself the limit is lowered
through `ReaderOptions.extra["limits"]` and the file declares or inflates to far more.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless, generate_uid

from healthgpt.cli import main
from healthgpt.data.errors import BadInput
from healthgpt.data.ingest.run import OutputRefused, ingest
from healthgpt.data.limits import Confinement, Limits, confine
from healthgpt.data.shards import MANIFEST_NAME, output_directory, read_manifest, write_manifest
from healthgpt.data.sources import LayoutError
from healthgpt.data.sources.pathvqa import UnsafePickleError, load_restricted_pickle
from healthgpt.model.vq import (
    CheckpointRefused,
    VQConfig,
    VQTokenizer,
    build_vq_tokenizer,
    load_lightning_state_dict,
    load_vq,
)
from healthgpt.train.vq_assets import register_pretrained_vq
from tests.data.outputs import quarantine, records
from tests.model.test_vq import MODEL_YAML

REPO = Path(__file__).resolve().parents[2]
# Peak resident memory an oversize case may add to the process after its imports. Without
# the limits each case below allocates from 256 MB (the scaled-down bombs) to many GB.
MEMORY_BOUND_MB = 80  # measured: 14 to 46 MB (a good volume or DICOM decoded beside)


# ------------------------------------------------------------------------------- helpers


class Exploit:
    """Unpickling this writes a marker file, if the loader lets it run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).save(
        buffer, "JPEG", quality=90
    )
    return buffer.getvalue()


def vqa_rad(root: Path, rows: list[dict], images: dict[str, bytes]) -> Path:
    """A VQA-RAD layout: the QA JSON (raw bytes when `rows` holds bytes) and its images."""
    (root / "VQA_RAD Image Folder").mkdir(parents=True)
    for name, data in images.items():
        (root / "VQA_RAD Image Folder" / name).write_bytes(data)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows))
    return root


def qa_row(qid: int, image: str = "a.jpg", answer: str = "yes") -> dict:
    return {"qid": qid, "image_name": image, "question": f"Is this {qid}?", "answer": answer}


METADATA_COLUMNS = ["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"]
REPORT = "FINDINGS: Clear lungs.\nIMPRESSION: Normal chest.\n"


def mimic(root: Path, ids: list[tuple[str, str, str]], metadata_columns=METADATA_COLUMNS):
    """A MIMIC-CXR-JPG layout (uncompressed tables) with one PA image per (subject, study,
    dicom) that names plain ids; ids with `../` get no files."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "mimic-cxr-2.0.0-metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(metadata_columns)
        for dicom, subject, study in ids:
            row = {"dicom_id": dicom, "subject_id": subject, "study_id": study}
            row |= {"ViewPosition": "PA", "Rows": "48", "Columns": "64"}
            writer.writerow([row[c] for c in metadata_columns])
    with open(root / "mimic-cxr-2.0.0-split.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dicom_id", "study_id", "subject_id", "split"])
        for dicom, subject, study in ids:
            writer.writerow([dicom, study, subject, "train"])
    (root / "files").mkdir(exist_ok=True)
    for seed, (dicom, subject, study) in enumerate(ids):
        if ".." in dicom + subject + study:
            continue
        study_dir = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        study_dir.mkdir(parents=True, exist_ok=True)
        (study_dir / f"{dicom}.jpg").write_bytes(jpeg_bytes(seed))
        study_dir.with_suffix(".txt").write_text(REPORT)
    return root


def nifti_file(path: Path, shape=(16, 16, 8), seed: int = 0) -> Path:
    data = np.random.default_rng(seed).random(shape).astype(np.float32) * 100
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def reasons(out: Path) -> list[str]:
    return [row["reason"] for row in quarantine(out)]


def run_measured(source: str, root: Path, out: Path, limits: dict | None = None) -> float:
    """Ingest in a fresh process; return its peak memory above its size after the imports,
    in MB.

    The ingest runs in a child forked after the imports, and its peak is read with
    `getrusage(RUSAGE_CHILDREN)`: a process's own `ru_maxrss` would also count the memory of
    the process it was started from (pytest), which Linux carries across `exec`.
    """
    script = textwrap.dedent(
        f"""
        import json, os, resource, sys, traceback
        import healthgpt.data.decode.dicom, healthgpt.data.decode.nifti
        import healthgpt.data.decode.imaging
        from healthgpt.data.ingest.run import ingest
        from healthgpt.data.sources import ReaderOptions, reader_class
        reader_class({source!r})
        import pydicom.pixels, nibabel, tarfile, gzip
        with open("/proc/self/status") as status:
            before = next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))
        options = ReaderOptions(extra={{"limits": json.loads(sys.argv[1])}})
        pid = os.fork()
        if pid == 0:
            try:
                ingest({source!r}, sys.argv[2], sys.argv[3], options)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, code = os.waitpid(pid, 0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(json.dumps((after - before) / 1024))
        sys.exit(code != 0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(limits or {}), str(root), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------- code execution


def test_vq_checkpoint_with_reduce_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "callbacks": Exploit(marker)}, ckpt)
    with pytest.raises(CheckpointRefused, match="outside the allow-list.*system"):
        load_lightning_state_dict(ckpt)
    (tmp_path / "model.yaml").write_text(MODEL_YAML)
    with pytest.raises(CheckpointRefused):
        register_pretrained_vq(ckpt, tmp_path / "model.yaml", tmp_path / "vq")
    with pytest.raises(CheckpointRefused):
        VQTokenizer.from_taming_checkpoint(ckpt, tmp_path / "model.yaml")
    assert not marker.exists() and not (tmp_path / "vq").exists()


LOADERS = [
    "vq",
    "vq_registered",
    "vq_safetensors",
    "official_weights",
    "official_release",
    "trained_checkpoint",
    "pathvqa_pickle",
]


@pytest.mark.parametrize("loader", LOADERS)
def test_every_loader_refuses_a_code_running_pickle(tmp_path, loader):
    """Every place that reads weights or unpickles (grep torch.load, pickle, Unpickler): the
    official .bin files, trained checkpoints, the VQGAN (taming `last.ckpt` and our own
    safetensors) and the PathVQA pickle. None runs the file."""
    from healthgpt.model import load_model, load_trainable, load_vq
    from healthgpt.model.presets import OfficialWeights, tiny
    from healthgpt.model.weights import load_official_weights

    marker = tmp_path / "ran"
    path = tmp_path / "evil.bin"
    if loader == "pathvqa_pickle":
        path.write_bytes(pickle.dumps([{"image": "x", "question": Exploit(marker)}]))
        with pytest.raises(UnsafePickleError):
            load_restricted_pickle(path)
        assert not marker.exists()
        return
    torch.save({"w": torch.zeros(1), "x": Exploit(marker)}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "model.yaml").write_text(MODEL_YAML)
    yaml_digest = hashlib.sha256(MODEL_YAML.encode()).hexdigest()
    with pytest.raises((CheckpointRefused, ValueError)):
        if loader == "vq":
            load_lightning_state_dict(path)
        elif loader == "vq_registered":
            build_vq_tokenizer(
                VQConfig(
                    ckpt_path=str(path),
                    ckpt_sha256=digest,
                    yaml_path=str(tmp_path / "model.yaml"),
                    yaml_sha256=yaml_digest,
                )
            )
        elif loader == "vq_safetensors":
            load_vq(path, digest)
        elif loader == "official_weights":
            load_official_weights(None, path, "comprehension")  # type: ignore[arg-type]
        elif loader == "official_release":
            config = tiny()
            config.official_weights = OfficialWeights(comprehension=str(path))
            load_model(config, device="cpu")
        else:
            load_trainable(load_model("tiny", device="cpu"), path)
    assert not marker.exists()


def test_lightning_checkpoint_loads_with_its_callback_class_as_a_stand_in(tmp_path, monkeypatch):
    """A real Lightning `last.ckpt` keys its callback state by the callback class: that one
    global is allowed (as an inert stand-in), the weights load, nothing else is needed."""
    import types

    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:  # what Lightning's pickle names
        pass

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", module.__name__):
        monkeypatch.setitem(sys.modules, name, module)
    state = {"encoder.w": torch.arange(4.0)}
    torch.save(
        {"state_dict": state, "callbacks": {ModelCheckpoint: {"best_model_path": "x"}}},
        tmp_path / "last.ckpt",
    )
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", module.__name__):
        monkeypatch.delitem(sys.modules, name)
    loaded = load_lightning_state_dict(tmp_path / "last.ckpt")
    torch.testing.assert_close(loaded["encoder.w"], state["encoder.w"])


def test_vq_checkpoint_changed_after_registration_is_refused(tmp_path):
    from healthgpt.model.vq import save_vq

    tiny = VQConfig(ch=32, ch_mult=(1, 2), attn_resolutions=(), z_channels=8, resolution=16)
    tiny = VQConfig(**{**tiny.__dict__, "n_embed": 16, "embed_dim": 8, "quantizer": "nearest"})
    path = save_vq(VQTokenizer(tiny), tmp_path / "vq.safetensors")
    from healthgpt.data.shards import file_sha256

    good = file_sha256(path)
    build_vq_tokenizer(VQConfig(ckpt_path=str(path), ckpt_sha256=good))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CheckpointRefused, match="sha256"):
        build_vq_tokenizer(VQConfig(ckpt_path=str(path), ckpt_sha256=good))


def _vq_file(path: Path, config: object, tensors: dict[str, torch.Tensor] | None = None) -> str:
    """A safetensors file holding `tensors` (none by default) and `config` as its vq_config;
    its sha256."""
    from safetensors.torch import save_file

    save_file(tensors or {}, str(path), metadata={"vq_config": json.dumps(config)})
    return hashlib.sha256(path.read_bytes()).hexdigest()


SMALL_VQ = {"ch": 32, "ch_mult": [1], "num_res_blocks": 0, "attn_resolutions": [],
            "z_channels": 32, "resolution": 16, "n_embed": 16, "embed_dim": 4,
            "quantizer": "nearest"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_embed": (1 << 18) + 1}, "n_embed=262145: must be an integer in 1..262144"),
        ({"ch": 0}, "ch=0"),
        ({"ch": True}, "ch=True"),
        ({"ch_mult": [1, 64]}, "ch_mult=[1, 64]"),
        ({"ch_mult": 4}, "ch_mult=4"),
        ({"quantizer": "lfq"}, "quantizer='lfq'"),
        ({"beta": "0.25"}, "beta='0.25'"),
        ({"ckpt_path": "/etc/passwd"}, "unknown fields ['ckpt_path']"),
    ],
)
def test_vq_safetensors_config_fields_are_bounded(tmp_path, change, message):
    path = tmp_path / "vq.safetensors"
    digest = _vq_file(path, {**SMALL_VQ, **change})
    with pytest.raises(CheckpointRefused, match=re.escape(message)):
        load_vq(path, digest)


def test_vq_safetensors_shapes_are_checked_before_the_model_is_built(tmp_path, monkeypatch):
    """A small file whose config describes a large codebook, or whose tensors do not match
    its config, is refused from the header: the model is only ever built on the meta
    device, where nothing is allocated."""
    import healthgpt.model.vq as vq_module

    built_on = []
    real_init = vq_module.VQTokenizer.__init__

    def recording_init(self, config):
        built_on.append(torch.empty(0).device.type)
        real_init(self, config)

    monkeypatch.setattr(vq_module.VQTokenizer, "__init__", recording_init)
    path = tmp_path / "vq.safetensors"
    digest = _vq_file(path, {**SMALL_VQ, "n_embed": 1 << 16, "embed_dim": 64})
    with pytest.raises(CheckpointRefused, match="tensors do not match"):
        load_vq(path, digest)
    assert built_on == ["meta"]
    real = vq_module.VQTokenizer(vq_module.VQConfig(**{**SMALL_VQ, "ch_mult": (1,)}))
    tensors = {k: v.contiguous() for k, v in real.state_dict().items()}
    tensors["quantize.embedding.weight"] = torch.zeros(17, 4)
    digest = _vq_file(path, SMALL_VQ, tensors)
    with pytest.raises(
        CheckpointRefused, match=r"quantize.embedding.weight \(17, 4\) != \(16, 4\)"
    ):
        load_vq(path, digest)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00" * 4, "not a safetensors file"),
        ((1 << 40).to_bytes(8, "little") + b"{}", "not a safetensors file"),
        (len(b"[1]").to_bytes(8, "little") + b"[1]", "header is not an object"),
        (len(b"{}").to_bytes(8, "little") + b"{}", "no readable vq_config"),
    ],
)
def test_vq_safetensors_that_is_not_one_is_refused(tmp_path, data, message):
    path = tmp_path / "vq.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointRefused, match=message):
        load_vq(path, hashlib.sha256(data).hexdigest())


def test_registered_checkpoint_needs_its_sha256_and_yaml_hash_and_loads_the_bytes_it_hashed(
    tmp_path, monkeypatch
):
    """No sha256 recorded: refused. The yaml is hashed too. `torch.load` reads the bytes that
    were hashed (one read), not the file again, so a swap between check and load is moot."""
    from tests.model.test_vq import SMALL_GUMBEL

    ckpt, yaml_path = tmp_path / "last.ckpt", tmp_path / "model.yaml"
    torch.save({"state_dict": VQTokenizer(SMALL_GUMBEL).state_dict()}, ckpt)
    yaml_path.write_text(MODEL_YAML)
    info = register_pretrained_vq(ckpt, yaml_path, tmp_path / "vq").info
    cfg = VQConfig(ckpt_path=str(ckpt), yaml_path=str(yaml_path))
    with pytest.raises(CheckpointRefused, match="no sha256 recorded"):
        build_vq_tokenizer(cfg)
    cfg = VQConfig(
        ckpt_path=str(ckpt),
        yaml_path=str(yaml_path),
        ckpt_sha256=info["sha256"],
        yaml_sha256=info["yaml_sha256"],
    )
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, **kw: seen.append(f) or real_load(f, **kw))
    build_vq_tokenizer(cfg)
    assert seen and all(isinstance(f, io.BytesIO) for f in seen)
    yaml_path.write_text(MODEL_YAML + "# changed\n")
    with pytest.raises(CheckpointRefused, match="model.yaml: sha256"):
        build_vq_tokenizer(cfg)


# ---------------------------------------------------------------------------- data loss


def test_out_equal_to_root_is_refused_and_the_source_kept(tmp_path, capsys):
    root = vqa_rad(tmp_path / "vqa", [qa_row(1)], {"a.jpg": jpeg_bytes()})
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    code = main(["ingest", "vqa_rad", "--root", str(root), "--out", str(root), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "is the source root or contains it" in err
    assert "Traceback" not in err and sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_out_an_ancestor_of_the_root_is_refused_and_its_files_kept(tmp_path, capsys):
    root = vqa_rad(tmp_path / "sources" / "vqa", [qa_row(1)], {"a.jpg": jpeg_bytes()})
    unrelated = tmp_path / "sources" / "notes.txt"
    unrelated.write_text("mine")
    code = main(["ingest", "vqa_rad", "--root", str(root), "--out", str(tmp_path), "--quiet"])
    assert code == 2 and "contains it" in capsys.readouterr().err
    assert unrelated.read_text() == "mine" and (root / "VQA_RAD Dataset Public.json").is_file()


def test_out_holding_files_ingest_did_not_write_is_refused(tmp_path, capsys):
    root = vqa_rad(tmp_path / "vqa", [qa_row(1)], {"a.jpg": jpeg_bytes()})
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code = main(["ingest", "vqa_rad", "--root", str(root), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "'thesis.tex'" in err and "not a previous output" in err
    assert (out / "thesis.tex").read_text() == "years of work"
    # a previous output of the tool is replaced as before
    assert main(["ingest", "vqa_rad", "--root", str(root), "--out", str(tmp_path / "o")]) == 0
    assert main(["ingest", "vqa_rad", "--root", str(root), "--out", str(tmp_path / "o")]) == 0


def plant_version_folder(out: Path) -> Path:
    (out / "v-0123456789abcdef").mkdir(parents=True)
    return out / "v-0123456789abcdef" / "thesis.docx"


def plant_data_and_empty_manifest(out: Path) -> Path:
    (out / "data").mkdir(parents=True)
    (out / MANIFEST_NAME).write_text("{}")
    return out / "data" / "results_2024.parquet"


def plant_unlisted_shard(out: Path) -> Path:
    """A real previous output with one more parquet file its manifest does not list."""
    return out / "data" / "results_2024.parquet"


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        (plant_version_folder, "'v-0123456789abcdef'"),
        (plant_data_and_empty_manifest, "that healthgpt ingest did not write"),
        (plant_unlisted_shard, "'data/results_2024.parquet', which its _manifest.json"),
    ],
)
def test_out_is_recognised_by_its_manifest_not_by_file_names(tmp_path, capsys, plant, message):
    root = vqa_rad(tmp_path / "vqa", [qa_row(1)], {"a.jpg": jpeg_bytes()})
    out = tmp_path / "out"
    if plant is plant_unlisted_shard:
        assert main(["ingest", "vqa_rad", "--root", str(root), "--out", str(out), "--quiet"]) == 0
    precious = plant(out)
    precious.write_text("precious")
    code = main(["ingest", "vqa_rad", "--root", str(root), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert precious.read_text() == "precious"


def test_out_holding_another_sources_output_is_refused(tmp_path, capsys):
    root = vqa_rad(tmp_path / "vqa", [qa_row(1)], {"a.jpg": jpeg_bytes()})
    out = tmp_path / "out"
    assert main(["ingest", "vqa_rad", "--root", str(root), "--out", str(out), "--quiet"]) == 0
    manifest = read_manifest(out)
    manifest["summary"]["source"] = "slake"
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    code = main(["ingest", "vqa_rad", "--root", str(root), "--out", str(out), "--quiet"])
    assert code == 2 and "holds the output of source 'slake'" in capsys.readouterr().err
    assert read_manifest(out)["summary"]["source"] == "slake"


def test_out_a_symlink_or_inside_the_root_is_refused(tmp_path, capsys):
    root = vqa_rad(tmp_path / "vqa", [qa_row(1)], {"a.jpg": jpeg_bytes()})
    real = tmp_path / "real"
    assert main(["ingest", "vqa_rad", "--root", str(root), "--out", str(real), "--quiet"]) == 0
    link = tmp_path / "link"
    link.symlink_to(real)
    code = main(["ingest", "vqa_rad", "--root", str(root), "--out", str(link), "--quiet"])
    assert code == 2 and "is a symbolic link" in capsys.readouterr().err
    assert link.is_symlink() and not list(tmp_path.glob(".link.staging-*"))
    code = main(["ingest", "vqa_rad", "--root", str(root), "--out", str(root / "o"), "--quiet"])
    assert code == 2 and "is inside the source root" in capsys.readouterr().err
    assert not (root / "o").exists()


def test_empty_build_does_not_replace_a_good_output_unless_forced(tmp_path, capsys):
    root = vqa_rad(tmp_path / "vqa", [qa_row(i) for i in range(4)], {"a.jpg": jpeg_bytes()})
    out = tmp_path / "out"
    ingest("vqa_rad", root, out)
    good = (out / MANIFEST_NAME).read_bytes()
    (root / "VQA_RAD Dataset Public.json").write_text("[]")
    args = ["ingest", "vqa_rad", "--root", str(root), "--out", str(out), "--quiet"]
    assert main(args) == 2
    assert "has 0 records where the output" in capsys.readouterr().err
    assert (out / MANIFEST_NAME).read_bytes() == good and len(records(out)) == 4
    assert main([*args, "--force"]) == 0 and records(out) == []


def test_build_losing_more_than_the_allowed_fraction_is_refused(tmp_path):
    root = vqa_rad(tmp_path / "vqa", [qa_row(i) for i in range(10)], {"a.jpg": jpeg_bytes()})
    out = tmp_path / "out"
    ingest("vqa_rad", root, out)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps([qa_row(i) for i in range(3)]))
    with pytest.raises(OutputRefused, match="max_drop_fraction=0.5"):
        ingest("vqa_rad", root, out)
    assert read_manifest(out)["summary"]["records"] == 10
    ingest("vqa_rad", root, out, max_drop_fraction=0.8)
    assert read_manifest(out)["summary"]["records"] == 3


def test_mimic_metadata_without_viewposition_is_a_layout_error(tmp_path, capsys):
    columns = [c for c in METADATA_COLUMNS if c != "ViewPosition"]
    root = mimic(tmp_path / "mimic", [("d1", "10000001", "50000001")], columns)
    with pytest.raises(
        LayoutError, match="mimic-cxr-2.0.0-metadata.csv has no column 'ViewPosition'"
    ):
        ingest("mimic_cxr", root, tmp_path / "out")
    assert main(["ingest", "mimic_cxr", "--root", str(root), "--out", str(tmp_path / "o")]) == 2
    assert "no column 'ViewPosition'" in capsys.readouterr().err


def test_split_csv_without_split_column_is_a_layout_error(tmp_path):
    root = mimic(tmp_path / "mimic", [("d1", "10000001", "50000001")])
    (root / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,study_id,subject_id\n")
    with pytest.raises(LayoutError, match="mimic-cxr-2.0.0-split.csv has no column 'split'"):
        ingest("mimic_cxr", root, tmp_path / "out")


SWAP_SCRIPT = """
import os, signal, sys
from pathlib import Path
import healthgpt.data.shards as shards
import healthgpt.storage as storage
if sys.argv[2] == "two-renames":
    storage._exchange = lambda a, b: False
    storage._between_renames = lambda: os.kill(os.getpid(), signal.SIGKILL)
else:
    real = storage._exchange
    def exchange_then_die(a, b):
        real(a, b)
        os.kill(os.getpid(), signal.SIGKILL)
    storage._exchange = exchange_then_die
with shards.output_directory(sys.argv[1]) as staging:
    (staging / "version.txt").write_text("new")
    shards.write_manifest(staging, [])
"""


@pytest.mark.parametrize("mode", ["two-renames", "exchange"])
def test_swap_killed_midway_leaves_a_complete_version(tmp_path, mode):
    target = tmp_path / "dataset"
    with output_directory(target) as staging:
        (staging / "version.txt").write_text("old")
        write_manifest(staging, [])
    done = subprocess.run(
        [sys.executable, "-c", SWAP_SCRIPT, str(target), mode],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
    )
    assert done.returncode == -signal.SIGKILL
    if mode == "exchange":  # one atomic call: the new version is there at once
        assert (target / "version.txt").read_text() == "new"
    else:  # cut between the renames: the next start puts the previous version back
        assert not target.exists()
        with output_directory(target) as staging:
            assert (target / "version.txt").read_text() == "old"
            (staging / "version.txt").write_text("next")
            write_manifest(staging, [])
        assert (target / "version.txt").read_text() == "next"
    assert not list(tmp_path.glob(".dataset.retired-*"))


# -------------------------------------------------------------------- path confinement


def test_the_cached_confinement_agrees_with_confine(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside.jpg"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(b"a")
    outside.write_bytes(b"secret")
    (root / "images" / "link.jpg").symlink_to(outside)
    (root / "images" / "inside.jpg").symlink_to(root / "images" / "a.jpg")
    confinement = Confinement(root)
    folder = root / "images"
    for name in ("a.jpg", "missing.jpg", "inside.jpg", "a.jpg"):  # twice: the cached folder
        assert confinement(name, folder) == confine(root, name, folder)
    for name in ("link.jpg", "../../outside.jpg", "/etc/passwd"):
        with pytest.raises(BadInput, match="outside the source root"):
            confinement(name, folder)


def test_mimic_ids_with_dot_dot_are_quarantined_not_read(tmp_path):
    escape = "x/../../../../../outside"  # files/p10/p10000002/s<escape> -> <tmp>/outside
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside.txt").write_text(REPORT)
    (tmp_path / "outside" / "d2.jpg").write_bytes(jpeg_bytes(7))
    root = mimic(tmp_path / "mimic", [("d1", "10000001", "50000001"), ("d2", "10000002", escape)])
    out = tmp_path / "out"
    ingest("mimic_cxr", root, out)
    assert len(records(out)) == 1
    [reason] = reasons(out)
    assert "points outside the source root" in reason and escape not in reason


def test_symlinks_out_of_the_root_are_quarantined_in_folder_sources(tmp_path):
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    dcm = get_testdata_file("CT_small.dcm")
    (secret / "ct.dcm").write_bytes(Path(dcm).read_bytes())
    nifti_file(secret / "vol.nii.gz")
    for source, name, good in (
        ("dicom_folder", "ct.dcm", lambda r: (r / "good.dcm").write_bytes(Path(dcm).read_bytes())),
        ("nifti_folder", "vol.nii.gz", lambda r: nifti_file(r / "good.nii.gz", seed=1)),
    ):
        root = tmp_path / source
        root.mkdir()
        good(root)
        (root / f"link-{name}").symlink_to(secret / name)
        out = tmp_path / f"{source}-out"
        summary = ingest(source, root, out)
        assert summary.accepted_items == 1 and summary.quarantined == 1, source
        assert reasons(out) == ["symlink points outside the source root"], source


def test_symlink_out_of_the_root_is_quarantined_in_mimic(tmp_path):
    root = mimic(tmp_path / "mimic", [("d1", "10000001", "50000001"), ("d2", "10000002", "5")])
    image = root / "files" / "p10" / "p10000002" / "s5" / "d2.jpg"
    (tmp_path / "secret.jpg").write_bytes(image.read_bytes())
    image.unlink()
    image.symlink_to(tmp_path / "secret.jpg")
    out = tmp_path / "out"
    ingest("mimic_cxr", root, out)
    assert len(records(out)) == 1
    assert any("points outside the source root" in r for r in reasons(out))


# ------------------------------------------------------------------------ truncated JPEG


def test_jpeg_cut_short_with_an_eoi_marker_is_quarantined(tmp_path):
    whole = jpeg_bytes(1, (256, 192))
    cut = whole[: len(whole) * 2 // 3] + b"\xff\xd9"
    root = vqa_rad(
        tmp_path / "vqa",
        [qa_row(1, "good.jpg"), qa_row(2, "cut.jpg")],
        {"good.jpg": whole, "cut.jpg": cut},
    )
    out = tmp_path / "out"
    ingest("vqa_rad", root, out)
    assert len(records(out)) == 1
    assert reasons(out) == [
        "truncated JPEG cut.jpg: the entropy-coded data ends before the last block "
        "(the decoder would fill the rest with gray)"
    ]


def tiny_jpeg_claiming(width: int, height: int) -> bytes:
    """A valid 8x8 JPEG whose frame header claims `width` x `height`."""
    data = bytearray(jpeg_bytes(2, (8, 8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_tiny_jpeg_claiming_20000_square_is_quarantined(tmp_path):
    bomb = tiny_jpeg_claiming(20000, 20000)
    assert len(bomb) < 1000
    root = vqa_rad(tmp_path / "vqa", [qa_row(1, "b.jpg")], {"b.jpg": bomb})
    out = tmp_path / "out"
    ingest("vqa_rad", root, out)
    assert reasons(out) == [
        "image declares 20000 x 20000 = 400,000,000 exceeds limit max_image_pixels=100,000,000"
    ]
    # under the limit, the decoder's gray fill in place of the missing data is caught
    (root / "VQA_RAD Image Folder" / "b.jpg").write_bytes(tiny_jpeg_claiming(2000, 2000))
    ingest("vqa_rad", root, out)
    assert reasons(out)[0].startswith("truncated JPEG b.jpg")


# --------------------------------------------------------------- limits before allocation


def png_claiming(width: int, height: int, bit_depth: int = 16) -> bytes:
    """A PNG header claiming `width` x `height` (16-bit gray) with a few bytes of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, 0, 0, 0, 0])
    idat = zlib.compress(b"\0" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_declaring_19999_square_is_refused_from_its_header(tmp_path):
    root = vqa_rad(tmp_path / "vqa", [qa_row(1, "p.png")], {"p.png": png_claiming(19999, 19999)})
    out = tmp_path / "out"
    peak = run_measured("vqa_rad", root, out)
    assert reasons(out) == [
        "image declares 19999 x 19999 = 399,960,001 exceeds limit max_image_pixels=100,000,000"
    ]
    assert peak < MEMORY_BOUND_MB


def test_nifti_header_claiming_1500_cubed_is_refused_before_reading(tmp_path):
    root = tmp_path / "nifti"
    root.mkdir()
    header = nib.Nifti1Header()
    header.set_data_shape((1500, 1500, 1500))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    (root / "claim.nii").write_bytes(header.binaryblock + b"\0" * 4)
    assert (root / "claim.nii").stat().st_size == 352
    nifti_file(root / "good.nii.gz")
    out = tmp_path / "out"
    peak = run_measured("nifti_folder", root, out)
    assert reasons(out) == [
        "NIfTI header declares 1500 x 1500 x 1500 = 3,375,000,000 exceeds limit "
        f"max_volume_voxels={Limits().max_volume_voxels:,}"
    ]
    assert len(records(out)) > 0 and peak < MEMORY_BOUND_MB


def gzip_nifti(shape: tuple[int, ...], dtype=np.int16) -> bytes:
    """A .nii.gz of zeros, compressed as it is produced (small on disk, never whole in RAM)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [compressor.compress(header.binaryblock + b"\0" * 4)]
    remaining = int(np.prod(shape)) * np.dtype(dtype).itemsize
    block = b"\0" * (1 << 22)
    while remaining > 0:
        parts.append(compressor.compress(block[: min(remaining, len(block))]))
        remaining -= len(block)
    return b"".join(parts) + compressor.flush()


def test_gzip_bomb_nifti_is_refused_in_bounded_steps(tmp_path):
    """A 256 MB volume in a few hundred KB of gzip: refused from its header in a NIfTI
    folder, and after at most the cap inflated in a tar member (IXI), never held whole."""
    bomb = gzip_nifti((512, 512, 512), np.uint8)
    assert len(bomb) < 1 << 20
    limits = {"max_decompressed_bytes": 16 << 20, "max_volume_voxels": 1 << 28}
    folder = tmp_path / "nifti"
    folder.mkdir()
    (folder / "bomb.nii.gz").write_bytes(bomb)
    nifti_file(folder / "good.nii.gz")
    peak = run_measured("nifti_folder", folder, tmp_path / "out1", limits)
    assert reasons(tmp_path / "out1") == [
        "NIfTI data bytes 134,217,728 exceeds limit max_decompressed_bytes=16,777,216"
    ]
    assert peak < MEMORY_BOUND_MB
    ixi = tmp_path / "ixi"
    ixi.mkdir()
    with tarfile.open(ixi / "IXI-T1.tar", "w") as archive:
        info = tarfile.TarInfo("IXI002-Guys-0828-T1.nii.gz")
        info.size = len(bomb)
        archive.addfile(info, io.BytesIO(bomb))
    peak = run_measured("ixi", ixi, tmp_path / "out2", limits)
    assert reasons(tmp_path / "out2") == [
        "NIfTI data bytes 134,217,728 exceeds limit max_decompressed_bytes=16,777,216"
    ]
    assert peak < MEMORY_BOUND_MB


def dicom_meta(syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    return meta


def image_dataset(rows: int, columns: int, bits: int = 16) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.Modality = "MR"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    return ds


def test_rle_dicom_declaring_65535_square_is_refused_before_decoding(tmp_path):
    root = tmp_path / "dicom"
    root.mkdir()
    ds = image_dataset(65535, 65535)
    ds.PixelData = encapsulate([b"\0" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta = dicom_meta(RLELossless)
    ds.save_as(root / "rle.dcm", enforce_file_format=True)
    assert (root / "rle.dcm").stat().st_size < 1000
    (root / "good.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    out = tmp_path / "out"
    peak = run_measured("dicom_folder", root, out)
    assert reasons(out) == [
        "DICOM declares 65535 x 65535 = 4,294,836,225 exceeds limit max_image_pixels=100,000,000"
    ]
    assert len(records(out)) == 1 and peak < MEMORY_BOUND_MB


def test_deflated_dicom_bomb_is_counted_in_bounded_steps_and_refused(tmp_path):
    """256 MB of pixels in a deflated dataset of under a megabyte: the parser would inflate
    it whole; it is counted first, in blocks, and refused at the cap."""
    root = tmp_path / "dicom"
    root.mkdir()
    ds = image_dataset(8192, 16384)
    body = io.BytesIO()
    buffer = pydicom.filebase.DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    size = 8192 * 16384 * 2
    compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    body.write(compressor.compress(buffer.getvalue()))
    body.write(compressor.compress(b"\xe0\x7f\x10\x00OW\0\0" + size.to_bytes(4, "little")))
    block = b"\0" * (1 << 22)
    for _ in range(size // len(block)):
        body.write(compressor.compress(block))
    body.write(compressor.flush())
    meta = pydicom.filebase.DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, dicom_meta(DeflatedExplicitVRLittleEndian))
    (root / "deflated.dcm").write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + body.getvalue())
    assert (root / "deflated.dcm").stat().st_size < 2 << 20
    out = tmp_path / "out"
    peak = run_measured("dicom_folder", root, out, {"max_decompressed_bytes": 32 << 20})
    [reason] = reasons(out)
    assert "deflated DICOM inflates to more than" in reason
    assert "exceeds limit max_decompressed_bytes=33,554,432" in reason
    assert peak < MEMORY_BOUND_MB


def tar_gz_claiming(member: str, size: int) -> bytes:
    """A gzip tar whose one member's header claims `size` bytes (none follow)."""
    info = tarfile.TarInfo(member)
    info.size = size
    raw = info.tobuf(format=tarfile.GNU_FORMAT)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return compressor.compress(raw + b"\0" * 4096) + compressor.flush()


def test_ixi_tar_members_over_the_limit_or_unselected_are_skipped_unread(tmp_path):
    root = tmp_path / "ixi"
    root.mkdir()
    (root / "IXI-T1.tar.gz").write_bytes(tar_gz_claiming("IXI002-Guys-0828-T1.nii.gz", 3 << 30))
    (root / "IXI-MRA.tar.gz").write_bytes(tar_gz_claiming("IXI002-Guys-0828-MRA.nii.gz", 3 << 30))
    out = tmp_path / "out"
    peak = run_measured("ixi", root, out)
    assert (
        "tar member skipped unread: size 3,221,225,472 exceeds limit "
        f"max_tar_member_bytes={Limits().max_tar_member_bytes:,}"
    ) in reasons(out)
    assert read_manifest(out)["summary"]["skipped_by_config"] == {"sequence MRA not selected": 1}
    assert peak < MEMORY_BOUND_MB


def test_huge_answer_string_is_skipped_unparsed_and_long_text_quarantined(tmp_path):
    root = tmp_path / "vqa"
    rows = [
        qa_row(1),
        qa_row(2, answer="x" * 150_000),
        qa_row(3),
        qa_row(4, answer="y" * 50_000_000),
    ]
    vqa_rad(root, rows, {"a.jpg": jpeg_bytes()})
    out = tmp_path / "out"
    peak = run_measured("vqa_rad", root, out, {"max_json_row_chars": 1_000_000})
    assert len(records(out)) == 2
    found = reasons(out)
    assert "answer of 150,000 characters exceeds limit max_text_chars=100,000" in found
    assert any(
        "longer than limit max_json_row_chars=1,000,000; skipped unparsed" in r for r in found
    )
    assert peak < MEMORY_BOUND_MB


# ----------------------------------------------------------------------- clear errors


def test_non_utf8_file_name_in_a_folder_source_is_quarantined(tmp_path):
    root = tmp_path / "dicom"
    root.mkdir()
    dcm = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (root / "good.dcm").write_bytes(dcm)
    (Path(os.fsdecode(bytes(root) + b"/bad\xff.dcm"))).write_bytes(dcm)
    out = tmp_path / "out"
    summary = ingest("dicom_folder", root, out)
    assert summary.accepted_items == 1
    assert reasons(out) == ["file name is not valid UTF-8 (byte 0xff at character 3)"]


def test_non_utf8_byte_in_a_qa_json_quarantines_that_row(tmp_path):
    root = vqa_rad(tmp_path / "vqa", [qa_row(1), qa_row(2)], {"a.jpg": jpeg_bytes()})
    path = root / "VQA_RAD Dataset Public.json"
    path.write_bytes(path.read_bytes().replace(b"Is this 2?", b"Is this \xff?"))
    out = tmp_path / "out"
    ingest("vqa_rad", root, out)
    assert len(records(out)) == 1
    [reason] = reasons(out)
    assert "VQA_RAD Dataset Public.json row at char" in reason
    assert "text is not valid UTF-8 (byte 0xff" in reason


def test_non_utf8_byte_in_a_mimic_csv_quarantines_that_row(tmp_path):
    root = mimic(tmp_path / "mimic", [("d1", "10000001", "50000001"), ("d2", "10000002", "5")])
    path = root / "mimic-cxr-2.0.0-metadata.csv"
    path.write_bytes(path.read_bytes().replace(b"d2,", b"d\xff,"))
    out = tmp_path / "out"
    ingest("mimic_cxr", root, out)
    assert len(records(out)) == 1
    assert "mimic-cxr-2.0.0-metadata.csv line 3: not valid UTF-8 (byte 0xff)" in reasons(out)


def test_lone_surrogate_escape_in_json_is_refused_at_read(tmp_path):
    rows = [qa_row(1), {**qa_row(2), "question": "Is this \ud800?"}]
    root = tmp_path / "vqa"
    vqa_rad(root, [], {"a.jpg": jpeg_bytes()})
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows))  # ensure_ascii: \\ud800
    out = tmp_path / "out"
    ingest("vqa_rad", root, out)
    assert len(records(out)) == 1
    assert "lone UTF-16 surrogate (\\ud800 escape)" in reasons(out)[0]


def test_deeply_nested_json_is_quarantined_and_the_rest_read(tmp_path):
    root = vqa_rad(tmp_path / "vqa", [], {"a.jpg": jpeg_bytes()})
    nested = "[" * 100_000 + "]" * 100_000
    text = f"[{json.dumps(qa_row(1))}, {nested}, {json.dumps(qa_row(2))}]"
    (root / "VQA_RAD Dataset Public.json").write_text(text)
    out = tmp_path / "out"
    ingest("vqa_rad", root, out)
    assert len(records(out)) == 2
    assert any("JSON nested too deeply; skipped unparsed" in r for r in reasons(out))


def test_csv_gz_that_is_not_gzip_is_a_clear_error_naming_the_file(tmp_path, capsys):
    root = mimic(tmp_path / "mimic", [("d1", "10000001", "50000001")])
    plain = root / "mimic-cxr-2.0.0-metadata.csv"
    plain.rename(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    code = main(["ingest", "mimic_cxr", "--root", str(root), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "mimic-cxr-2.0.0-metadata.csv.gz is not a gzip file" in err
    assert "Traceback" not in err


def test_limits_come_from_defaults_then_environment_then_run_config(monkeypatch):
    from healthgpt.data.limits import Limits

    monkeypatch.setenv("HEALTHGPT_LIMIT_MAX_IMAGE_PIXELS", "1000")
    limits = Limits.from_options({"limits": {"max_text_chars": 10}})
    assert (limits.max_image_pixels, limits.max_text_chars) == (1000, 10)
    assert limits.max_volume_voxels == Limits().max_volume_voxels
    with pytest.raises(ValueError, match="unknown limits"):
        Limits.from_options({"limits": {"max_pixels": 1}})
    with pytest.raises(ValueError, match="positive integer"):
        Limits.from_options({"limits": {"max_text_chars": 0}})


# ------------------------------------------------- memory bound at the shipped defaults


def test_one_bit_dicom_is_judged_by_its_unpacked_size_and_float_copies():
    """1-bit pixel data unpacks 8x to uint8 and the modality LUT works in float64: a header
    whose packed size passes `max_decompressed_bytes` must still be refused at the defaults."""
    from healthgpt.data.decode.dicom import check_pixel_size

    ds = Dataset()
    ds.Rows, ds.Columns, ds.NumberOfFrames = 8192, 8192, 32
    ds.SamplesPerPixel, ds.BitsAllocated = 1, 1
    limits = Limits()
    assert limits.max_decompressed_bytes >= 8192 * 8192 * 32 // 8  # the packed size passes
    with pytest.raises(BadInput, match="max_working_bytes"):
        check_pixel_size(ds, limits)


def test_resample_output_grid_is_checked_before_it_is_allocated():
    """8^3 voxels of 250 mm resampled to 1 mm would be 2000^3 float32 (32 GB)."""
    from healthgpt.data.decode.nifti import Volume, resample

    volume = Volume(np.ones((8, 8, 8), np.float32), np.diag([250.0, 250.0, 250.0, 1.0]))
    with pytest.raises(BadInput, match="resampled grid 2000 x 2000 x 2000 .* max_volume_voxels"):
        resample(volume, (1.0, 1.0, 1.0))


def test_nifti_of_512_cubed_does_not_fit_the_default_bound():
    """512^3 uint8 (134M voxels) becomes several float32 copies of 512 MiB each."""
    from healthgpt.data.decode.nifti import check_header

    header = nib.Nifti1Header()
    header.set_data_shape((512, 512, 512))
    header.set_data_dtype(np.uint8)
    with pytest.raises(BadInput, match="max_volume_voxels|max_working_bytes"):
        check_header(header, 0, Limits())


def png_header_only(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    """A PNG signature and IHDR declaring a size, and nothing to decode."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, color_type])
    ihdr += b"\0\0\0"
    chunk = len(ihdr).to_bytes(4, "big") + b"IHDR" + ihdr
    chunk += (zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF).to_bytes(4, "big")
    idat = b"\0\0\0\0IDAT" + (zlib.crc32(b"IDAT") & 0xFFFFFFFF).to_bytes(4, "big")
    return b"\x89PNG\r\n\x1a\n" + chunk + idat


def jpeg_declaring(width: int, height: int) -> bytes:
    """A ~700-byte RGB JPEG whose frame header declares `width` x `height`."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(png_header_only(8000, 8000, 16, 0), id="png-16bit-8000"),
        pytest.param(jpeg_declaring(10000, 10000), id="jpeg-rgb-10000"),
    ],
)
def test_image_is_refused_from_its_header_by_bytes_per_pixel_before_decoding(data):
    """Pixel count alone lets a 16-bit PNG or an RGB JPEG at `max_image_pixels` through: the
    working bytes (bytes per pixel, float copies, a JPEG's second decode) are checked from
    the header, before any decode."""
    from healthgpt.data.decode.imaging import load_image_bytes

    with pytest.raises(BadInput, match="max_working_bytes"):
        load_image_bytes(data, "declared")


def ixi_tar(path: Path, members: list[tarfile.TarInfo], tmp_path: Path) -> Path:
    """An IXI tar holding `members` (no data) and one good T1 volume."""
    good = nifti_file(tmp_path / "IXI904-Guys-0001-T1.nii.gz")
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as archive:
        for info in members:
            archive.addfile(info, io.BytesIO(b"\0" * info.size) if info.size else None)
        archive.add(good, good.name)
    return path


def test_ixi_member_larger_than_its_header_needs_is_refused_before_its_body(tmp_path):
    """A raw `.nii` member whose header declares 2x2x2 but which holds 8 MiB is refused from
    its header, not read whole (kilobytes on disk: the tar is gzip of zeros)."""
    header = nib.Nifti1Header()
    header.set_data_shape((2, 2, 2))
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    info = tarfile.TarInfo("IXI901-Guys-0001-T1.nii")
    info.size = 8 << 20
    root = tmp_path / "ixi"
    root.mkdir()
    path = root / "IXI-T1.tar.gz"
    good = nifti_file(tmp_path / "IXI904-Guys-0001-T1.nii.gz")
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        body = header.binaryblock + b"\0" * (info.size - 348)
        archive.addfile(info, io.BytesIO(body))
        archive.add(good, good.name)
    assert path.stat().st_size < 200_000
    out = tmp_path / "out"
    ingest("ixi", root, out)
    assert reasons(out) == [
        "tar member skipped unread: size 8,388,608 is more than the 360 bytes its NIfTI "
        "header declares"
    ]
    assert len(records(out)) > 0


def test_ixi_tar_members_that_are_not_regular_files_are_quarantined(tmp_path):
    members = []
    for name, kind in (
        ("IXI901-Guys-0001-T1.nii.gz", tarfile.DIRTYPE),
        ("IXI902-Guys-0001-T1.nii.gz", tarfile.FIFOTYPE),
        ("IXI903-Guys-0001-T1.nii.gz", tarfile.SYMTYPE),
    ):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = "../../etc/passwd" if kind == tarfile.SYMTYPE else ""
        members.append(info)
    root = tmp_path / "ixi"
    root.mkdir()
    ixi_tar(root / "IXI-T1.tar", members, tmp_path)
    out = tmp_path / "out"
    ingest("ixi", root, out)
    assert sorted(reasons(out)) == [
        "tar member is a FIFO, not a regular file",
        "tar member is a directory, not a regular file",
        "tar member is a symbolic link, not a regular file",
    ]
    assert len(records(out)) > 0


def test_a_lone_surrogate_in_a_pickle_row_is_quarantined_not_fatal(tmp_path):
    """Every reader's text passes one check before the shard write (`SourceReader.guard`)."""
    from healthgpt.data.samples import pathvqa

    root = tmp_path / "pathvqa"
    pathvqa.build(root)
    qas = next(root.rglob("train_qa.pkl"))
    rows = pickle.loads(qas.read_bytes())
    rows[0]["question"] = "what is \ud800 this?"
    qas.write_bytes(pickle.dumps(rows))
    out = tmp_path / "out"
    ingest("pathvqa", root, out)
    assert any("lone UTF-16 surrogate" in reason for reason in reasons(out))
    assert len(records(out)) > 0


def test_progressive_jpeg_cut_at_a_scan_boundary_is_quarantined():
    """Cut after k complete scans plus EOI decodes without error to a blurred image: the scan
    script must bring every coefficient of every component to full precision."""
    from healthgpt.data.decode.imaging import load_image_bytes

    rng = np.random.default_rng(0)
    pixels = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, progressive=True)
    full = buffer.getvalue()
    assert load_image_bytes(full, "whole.jpg").size == (64, 64)
    scans = [i for i in range(len(full) - 1) if full[i : i + 2] == b"\xff\xda"]
    for kept in (1, 2, len(scans) - 1):
        with pytest.raises(BadInput, match="truncated JPEG"):
            load_image_bytes(full[: scans[kept]] + b"\xff\xd9", "cut.jpg")
    gray = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(gray, "JPEG", progressive=True)
    assert load_image_bytes(gray.getvalue(), "gray.jpg").mode == "L"


def test_csv_field_over_the_limit_names_its_own_line(tmp_path, capsys):
    """A field past the CSV module's limit on the first data row is on line 2, not 1."""
    root = mimic(tmp_path / "mimic", [("d1", "10000001", "50000001")])
    table = root / "mimic-cxr-2.0.0-metadata.csv"
    lines = table.read_text().splitlines()
    lines[1] = lines[1].replace("PA", "x" * (csv.field_size_limit() + 1))
    table.write_text("\n".join(lines) + "\n")
    code = main(["ingest", "mimic_cxr", "--root", str(root), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "at line 2:" in err and "field larger than field limit" in err, err


def test_a_simpleitk_failure_in_resample_is_a_clear_quarantine_reason(monkeypatch):
    import SimpleITK as sitk

    from healthgpt.data.decode.nifti import Volume, resample

    def fail(*args, **kwargs):
        raise RuntimeError("Exception thrown in SimpleITK Resample: Failed to allocate memory")

    monkeypatch.setattr(sitk, "Resample", fail)
    volume = Volume(np.ones((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(BadInput, match="resample to 8 x 8 x 8 failed: .*allocate memory"):
        resample(volume, (0.5, 0.5, 0.5))

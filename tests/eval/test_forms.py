"""The question form follows the evaluated model, not whatever mixture is on disk."""

import dataclasses
import json

from healthgpt.data.mixture.config import demo_preset
from healthgpt.eval.forms import question_form
from healthgpt.train.run import subset_fingerprint


def mixture(tmp_path, style):
    """A mixture directory whose manifest records a config with `style`, one train shard."""
    root = tmp_path / "mixture"
    (root / "stage3" / "data").mkdir(parents=True)
    (root / "stage3" / "data" / "train-00000.parquet").write_bytes(b"rows")
    config = dataclasses.replace(demo_preset(), closed_question_style=style)
    shards = [{"path": "stage3/data/train-00000.parquet"}]
    (root / "_manifest.json").write_text(json.dumps({"config": config.to_dict(), "shards": shards}))
    return root


def checkpoint(tmp_path, fingerprint):
    final = tmp_path / "ckpt" / "final"
    final.mkdir(parents=True)
    state = {"config": {"subset": "stage3"}, "inputs": {"subset": fingerprint}}
    (final / "state.json").write_text(json.dumps(state))
    return final


def test_official_weights_are_asked_plainly_whatever_is_on_disk(tmp_path):
    """The form was read from the mixture on disk even for the official weights."""
    form = question_form(True, None, mixture(tmp_path, "choice"), demo_preset)
    assert form.trained is None and "official" in form.source


def test_checkpoint_uses_the_mixture_it_recorded(tmp_path):
    root = mixture(tmp_path, "choice")
    ckpt = checkpoint(tmp_path, subset_fingerprint(root / "stage3"))
    form = question_form(False, ckpt, root, demo_preset)
    assert form.trained.closed_question_style == "choice"
    assert form.source == "the mixture the checkpoint was trained on"


def test_a_changed_mixture_is_a_fallback_and_says_so(tmp_path):
    root = mixture(tmp_path, "choice")
    ckpt = checkpoint(tmp_path, "another mixture's fingerprint")
    form = question_form(False, ckpt, root, demo_preset)
    assert form.trained.closed_question_style == "choice"
    assert "no longer on disk" in form.source and "may not be the trained form" in form.source
    bare = question_form(False, None, tmp_path / "none", demo_preset)
    assert bare.trained == demo_preset() and "no training record" in bare.source

"""Checkpoints are atomic, verified on load, and refused when tampered with or foreign."""

from __future__ import annotations

import torch

from healthgpt.train import state as ckpt


def _save(tmp_path, step=3, key="run-a"):
    return ckpt.save_checkpoint(
        ckpt.checkpoint_dir(tmp_path, step),
        {"trainable": {"w": torch.arange(6.0).view(2, 3)}},
        {"run_key": key, "step": step, "rng": [ckpt.rng_state()]},
    )


def test_roundtrip_and_rng(tmp_path):
    path = _save(tmp_path)
    loaded = ckpt.load_checkpoint(path, "run-a")
    assert loaded.step == 3
    assert torch.equal(loaded.tensors("trainable")["w"], torch.arange(6.0).view(2, 3))
    ckpt.set_rng_state(loaded.state["rng"][0])
    first = torch.rand(3)
    ckpt.set_rng_state(loaded.state["rng"][0])
    assert torch.equal(first, torch.rand(3))
    assert not list(tmp_path.glob(".*.tmp")), "no staging directory left behind"


def test_tampered_file_is_refused(tmp_path):
    path = _save(tmp_path)
    file = path / "trainable.safetensors"
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    try:
        ckpt.load_checkpoint(path, "run-a")
    except ckpt.CheckpointError as error:
        assert "sha256" in str(error) and "trainable.safetensors" in str(error)
    else:
        raise AssertionError("a tampered checkpoint was loaded")


def test_foreign_run_is_refused(tmp_path):
    path = _save(tmp_path, key="run-a")
    try:
        ckpt.load_checkpoint(path, "run-b")
    except ckpt.CheckpointError as error:
        assert "refusing to resume" in str(error)
    else:
        raise AssertionError("a checkpoint of another run was accepted")


def test_incomplete_checkpoints_are_invisible_and_pruned(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step)
    (tmp_path / ".ckpt-00000004.999999999-dead.tmp").mkdir()  # a writer killed mid-way
    (tmp_path / "ckpt-00000005").mkdir()  # no state.json: never completed
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)][-1] == "ckpt-00000003"
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000002", "ckpt-00000003"]
    assert not (tmp_path / ".ckpt-00000004.999999999-dead.tmp").exists()


def test_optimizer_state_roundtrip():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    param.sum().backward()
    optimizer.step()
    tensors, groups = ckpt.optimizer_tensors(optimizer)
    other = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.5)
    ckpt.restore_optimizer(other, tensors, groups)
    state = other.state_dict()
    assert state["param_groups"][0]["lr"] == 0.1
    assert torch.equal(state["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])

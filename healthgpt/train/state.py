"""Checkpoints: safetensors for tensors, a small JSON for everything else, written atomically.

A checkpoint is a directory `ckpt-<step>/` holding `*.safetensors` files and `state.json`
(config, run key, step, data position, RNG state, and the sha256 of every tensor file). It is
built under a temporary name and renamed into place, so a kill mid-write leaves either the
previous checkpoints or a complete new one, never a torn one. Loading verifies the hashes and
the run key: a tampered or foreign checkpoint is refused rather than silently trained on.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from healthgpt.storage import atomic_directory, atomic_path, file_sha256, pid_alive, write_json

STATE_NAME = "state.json"
PREFIX = "ckpt-"


class CheckpointError(RuntimeError):
    """A checkpoint that must not be used: tampered, incomplete, or from another run."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        return load_file(self.path / f"{name}.safetensors")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    """Write one safetensors file atomically; return its sha256."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=metadata)
    return file_sha256(path)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / f"{PREFIX}{step:08d}"


def save_checkpoint(
    final: Path,
    tensors: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    extra_files: dict[str, bytes] | None = None,
    writers: dict[str, Callable[[Path], object]] | None = None,
) -> Path:
    """Write directory `final`: one safetensors file per entry of `tensors`, `extra_files`
    (plots, reports), the files `writers` write (name -> function of the path to write) and
    state.json with every file's sha256.
    """
    # The staging name `.<name>.<pid>-<random>.tmp` is what `prune_checkpoints` cleans up.
    staging = final.parent / f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    with atomic_directory(final, staging=staging):
        files = {
            f"{name}.safetensors": save_tensors(staging / f"{name}.safetensors", group)
            for name, group in tensors.items()
        }
        for name, write in (writers or {}).items():
            write(staging / name)
            files[name] = file_sha256(staging / name)
        for name, data in (extra_files or {}).items():
            (staging / name).write_bytes(data)
            files[name] = file_sha256(staging / name)
        write_json(staging / STATE_NAME, {**state, "files": files})
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (those with a state.json), oldest first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.glob(f"{PREFIX}*") if (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: p.name)


def load_checkpoint(path: Path, run_key: str | None = None) -> Checkpoint:
    """Read and verify a checkpoint: every tensor file's sha256, and the run key if given."""
    state_path = path / STATE_NAME
    try:
        state = json.loads(state_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {path}: unreadable {STATE_NAME}: {error}") from error
    if run_key is not None and state.get("run_key") != run_key:
        raise CheckpointError(
            f"checkpoint {path} belongs to run {str(state.get('run_key'))[:16]}, not {run_key[:16]}"
            ": its config or inputs differ; refusing to resume from it"
        )
    for name, expected in state.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path}: {name} is missing")
        actual = file_sha256(file)
        if actual != expected:
            raise CheckpointError(
                f"checkpoint {path}: {name} has sha256 {actual[:16]}..., but state.json records "
                f"{expected[:16]}...: the file was modified or corrupted; refusing to load it. "
                "Delete the checkpoint directory to start that run over."
            )
    return Checkpoint(path, state)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (all if 0) and leftovers of killed writers."""
    for stale in run_dir.glob(".*.tmp"):
        pid = stale.name.rsplit(".", 2)[-2].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    existing = list_checkpoints(run_dir)
    for old in existing[:-keep] if keep else existing:
        shutil.rmtree(old, ignore_errors=True)


# --- RNG and optimizer state as JSON + tensors ---------------------------------------------


def rng_state() -> dict[str, Any]:
    """The torch RNG states (CPU and every CUDA device) as base64 strings."""
    state = {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available():
        state["cuda"] = [
            base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()
        ]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    def tensor(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    torch.set_rng_state(tensor(state["cpu"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(s) for s in state["cuda"]])


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able groups."""
    state_dict = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": value if torch.is_tensor(value) else torch.tensor(value)
        for index, slots in state_dict["state"].items()
        for key, value in slots.items()
    }
    return tensors, {"param_groups": state_dict["param_groups"]}


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: dict
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, slot = key.split(".", 1)
        state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups["param_groups"]})

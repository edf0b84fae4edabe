"""What a finished stage reports: the loss curve as a PNG and a flat summary of its metrics."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import numpy as np


def loss_curve_png(history: list[dict[str, Any]], title: str) -> bytes:
    """Training loss per step, one line per task family (with a moving average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_family: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for entry in history:
        by_family[entry["family"]].append((entry["step"], entry["loss"]))
    figure, axis = plt.subplots(figsize=(6, 3.2), dpi=100)
    for family, points in sorted(by_family.items()):
        steps, losses = (np.array(v) for v in zip(*points, strict=True))
        axis.plot(steps, losses, alpha=0.3, linewidth=0.8)
        window = max(1, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1 :], smooth, label=family, linewidth=1.6)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("training loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if by_family:
        axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def loss_summary(history: list[dict[str, Any]], window: int = 10) -> dict[str, dict[str, float]]:
    """Per family: mean loss of the first and last `window` steps (robust to step noise)."""
    by_family: dict[str, list[float]] = defaultdict(list)
    for entry in history:
        by_family[entry["family"]].append(entry["loss"])
    summary = {}
    for family, losses in sorted(by_family.items()):
        n = min(window, max(1, len(losses) // 4))
        summary[family] = {
            "first": float(np.mean(losses[:n])),
            "last": float(np.mean(losses[-n:])),
            "steps": len(losses),
        }
    return summary

"""What loading weights into a model did, kept by the model and returned by the loaders.

Its own module so that the model (which keeps the reports) and the loaders (which take the
model) do not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoadReport:
    """What a load did: keys loaded, keys not mapped (with why), model tensors not provided."""

    loaded: list[str] = field(default_factory=list)
    unmapped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    source: str = ""  # the file loaded: its path and sha256 (or "random (dry run)")
    rows_kept: int = 0  # fusion file: embedding + head rows kept apart for their family

    @property
    def ok(self) -> bool:
        return not self.unmapped and not self.missing

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for reason in self.unmapped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        parts = [f"{len(self.loaded)} loaded", f"{len(self.missing)} missing"]
        if self.rows_kept:
            parts.append(f"{self.rows_kept} family rows")
        parts += [f"{n} unmapped: {reason}" for reason, n in reasons.items()]
        text = "; ".join(parts)
        return f"{self.source}: {text}" if self.source else text

"""Sample sizes and 95% intervals for the report's cells.

- A share of 0/1 outcomes (closed accuracy, multiple-choice accuracy): the Wilson score
  interval, which stays inside [0, 1] and is sensible for the small n of a smoke run.
- A mean of graded credit (open recall, "all", an image metric): mean +- 1.96 standard errors
  (sample standard deviation), clipped to the metric's range when it has one.

`Running` keeps n, the sum and the sum of squares, so memory does not grow with the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion, as fractions."""
    if n <= 0:
        raise ValueError("an interval needs at least one observation")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Running:
    """n, sum and sum of squares of a stream of values; `binary` while every value is 0 or 1."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0
    binary: bool = True

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.squares += value * value
        self.binary = self.binary and value in (0.0, 1.0)

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def interval(
        self, bounds: tuple[float, float] | None = (0.0, 1.0)
    ) -> tuple[float, float] | None:
        """95% interval of the mean (Wilson for 0/1 values, normal otherwise; None for a
        single graded value, whose spread is unknown)."""
        if self.binary:
            return wilson(self.total, self.n)
        if self.n < 2:
            return None
        mean = self.total / self.n
        variance = max(0.0, self.squares - self.n * mean * mean) / max(1, self.n - 1)
        half = Z95 * math.sqrt(variance / self.n)
        low, high = mean - half, mean + half
        if bounds is not None:
            low, high = max(bounds[0], low), min(bounds[1], high)
        return low, high

    def summary(self, scale: float = 100.0, bounds: tuple[float, float] | None = (0.0, 1.0)):
        """{value, n, ci: [low, high]} scaled (x100 for percentages), or None when empty."""
        if not self.n:
            return None
        interval = self.interval(bounds)
        return {
            "value": round(scale * self.total / self.n, 2),
            "n": self.n,
            "ci": [round(scale * bound, 2) for bound in interval] if interval else None,
        }


def cell(value: Any) -> dict[str, Any] | None:
    """A summary cell as stored in `scores.json` (dict with value, n, ci), or None."""
    return value if isinstance(value, dict) and "value" in value else None

"""The update metrics, summed on the device between logging intervals (no host sync per update)."""

from __future__ import annotations

import torch
from torch import Tensor


class UpdateMetrics:
    """Sums of the update's info values, keyed by the set of metric names (diagnostics appear only
    every N updates): one stack and one add per update instead of an add per metric."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, ...], Tensor] = {}
        self.counts: dict[tuple[str, ...], int] = {}

    def add(self, info: dict[str, Tensor]) -> None:
        keys = tuple(info)
        values = torch.stack([v.detach().float().reshape(()) for v in info.values()])
        if keys in self.sums:
            self.sums[keys] += values
            self.counts[keys] += 1
        else:
            self.sums[keys], self.counts[keys] = values, 1

    def pop(self) -> dict[str, float]:
        """Means since the last call (one host sync), then reset."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for keys, values in self.sums.items():
            for k, v in zip(keys, values.cpu().tolist(), strict=True):
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + self.counts[keys]
        self.sums, self.counts = {}, {}
        return {k: sums[k] / counts[k] for k in sums}

    def named(self) -> dict[str, Tensor]:
        """Each pending sum by metric name (for a finiteness check)."""
        return {k: v[i] for keys, v in self.sums.items() for i, k in enumerate(keys)}

"""Which diffusion timesteps score distillation draws, and how the range anneals.

threestudio/MVDream draw ``t ~ U[lo, hi] * T`` with the range moving linearly from
``start_range`` to ``end_range`` over ``anneal_steps`` optimizer steps (MVDream: [0.98, 0.98] ->
[0.02, 0.50] by step 8000): early steps see heavy noise (global shape), later ones light noise
(detail). One t is drawn per object and shared by its views.
"""

from __future__ import annotations

import torch
from torch import Tensor


class TimestepSchedule:
    """The annealed range of distillation timesteps.

    Args:
        start_range: (lo, hi) fractions of the schedule at step 0.
        end_range: (lo, hi) at ``anneal_steps`` and after.
        anneal_steps: optimizer steps over which the range moves linearly (0: always the end).
    """

    def __init__(
        self,
        start_range: tuple[float, float] = (0.98, 0.98),
        end_range: tuple[float, float] = (0.02, 0.50),
        anneal_steps: int = 8000,
    ) -> None:
        for name, (lo, hi) in (("start_range", start_range), ("end_range", end_range)):
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"{name} must satisfy 0 <= lo <= hi <= 1, got {(lo, hi)}")
        if anneal_steps < 0:
            raise ValueError(f"anneal_steps must be >= 0, got {anneal_steps}")
        self.start_range = tuple(start_range)
        self.end_range = tuple(end_range)
        self.anneal_steps = anneal_steps

    def bounds(self, step: int) -> tuple[float, float]:
        """(lo, hi) fractions at optimizer step ``step``."""
        f = 1.0 if self.anneal_steps == 0 else min(1.0, max(0, step) / self.anneal_steps)
        lo = self.start_range[0] + f * (self.end_range[0] - self.start_range[0])
        hi = self.start_range[1] + f * (self.end_range[1] - self.start_range[1])
        return lo, hi

    def sample(
        self, step: int, num_objects: int, num_train_timesteps: int, generator: torch.Generator
    ) -> Tensor:
        """(num_objects,) long timesteps in [1, T - 1] for optimizer step ``step``."""
        lo, hi = self.bounds(step)
        u = torch.rand(num_objects, generator=generator)
        t = ((lo + (hi - lo) * u) * num_train_timesteps).long()
        return t.clamp(1, num_train_timesteps - 1)

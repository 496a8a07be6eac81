"""Toy judges with known gradients, and random inputs, for the guidance and DreamFL tests."""

from __future__ import annotations

import torch
from torch import nn


class Redness(nn.Module):
    """A toy judge with a known gradient: 10 x the mean of (red - blue) over the views."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = False
        self.seen: torch.Tensor | None = None

    def as_frozen_guide(self) -> Redness:
        self.frozen = True
        return self.eval()

    def check_prompt(self, prompt: str) -> None:
        pass

    def reads_ground_truth(self) -> bool:
        return False

    def score(self, assets, prompts, *, cameras):  # assets (B, V, 3, H, W)
        assert len(prompts) == assets.shape[0] and len(cameras) == assets.shape[:2].numel()
        self.seen = assets.detach()
        return 10 * (assets[:, :, 0] - assets[:, :, 2]).mean(dim=(1, 2, 3))


class CameraJudge(Redness):
    """Redness as a judge that reads the ground truth; it records how many cameras each call
    got."""

    def reads_ground_truth(self) -> bool:
        return True

    def __init__(self) -> None:
        super().__init__()
        self.camera_counts: list[int] = []

    def score(self, assets, prompts, *, cameras):
        self.camera_counts.append(len(cameras))
        return super().score(assets, prompts, cameras=cameras)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def renders(objects: int = 2, seed: int = 0) -> torch.Tensor:
    """(objects, 4, 3, 8, 8) random views, the guidance's layout, requiring grad."""
    return torch.rand(objects, 4, 3, 8, 8, generator=gen(seed)).requires_grad_(True)

"""Backgrounds seen by rays that leave the volume (or pixels no face covers)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Background(nn.Module):
    """Base class: ray directions (..., 3) -> colours (..., 3) in [0, 1]."""

    def forward(self, directions: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class SolidBackground(Background):
    """A constant colour (white by default, like the reference renders).

    Args:
        color: RGB in [0, 1].
    """

    def __init__(self, color: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
            raise ValueError(f"background color must be 3 values in [0, 1], got {color}")
        self.register_buffer("color", torch.tensor(color, dtype=torch.float32), persistent=False)

    def forward(self, directions: Tensor) -> Tensor:
        return self.color.to(directions).expand(*directions.shape[:-1], 3)


class LearnedBackground(Background):
    """A small MLP of the view direction (threestudio's neural environment map).

    Args:
        hidden_dim: MLP width.
        random_color_prob: during training, the probability of replacing the background by a
            random solid colour (stops the foreground from being explained by the background).
    """

    def __init__(self, hidden_dim: int = 32, random_color_prob: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, 3)
        )
        self.random_color_prob = random_color_prob

    def forward(self, directions: Tensor) -> Tensor:
        rgb = torch.sigmoid(self.net(directions))
        if self.training and self.random_color_prob > 0 and torch.rand(()) < self.random_color_prob:
            return torch.rand(3, device=directions.device).expand_as(rgb)
        return rgb

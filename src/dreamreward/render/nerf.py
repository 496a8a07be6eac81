"""The implicit volume: a grid-encoded density + colour field (threestudio's implicit-volume)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dreamreward.render.encoding import MultiResolutionGridEncoding


def _mlp(in_dim: int, hidden_dim: int, num_hidden_layers: int, out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_hidden_layers):
        layers += [nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


class NeRFField(nn.Module):
    """Density and diffuse colour at 3D points inside the cube [-radius, radius]^3.

    ``density = softplus(raw + bias(x))`` where the optional "blob" bias of Magic3D/threestudio,
    ``blob_density * (1 - |x| / blob_radius)``, starts optimisation from a soft ball at the
    origin (text-to-3D needs it; reconstruction can turn it off with ``blob_density=0``).
    Outside the cube the density is zero.

    Args:
        radius: half-size of the bounding cube.
        encoding: the spatial encoding (any module mapping (P, 3) in [0, 1]^3 to (P, D) with an
            ``output_dim`` attribute).
        hidden_dim, num_hidden_layers: MLP sizes for the density and colour heads.
        blob_density, blob_radius: the density bias above (threestudio MVDream: 10, 0.5).
    """

    def __init__(
        self,
        radius: float = 1.0,
        encoding: MultiResolutionGridEncoding | None = None,
        hidden_dim: int = 64,
        num_hidden_layers: int = 1,
        blob_density: float = 10.0,
        blob_radius: float = 0.5,
    ) -> None:
        super().__init__()
        if radius <= 0:
            raise ValueError(f"radius must be positive, got {radius}")
        self.radius = radius
        self.encoding = encoding or MultiResolutionGridEncoding()
        self.density_head = _mlp(self.encoding.output_dim, hidden_dim, num_hidden_layers, 1)
        self.color_head = _mlp(self.encoding.output_dim, hidden_dim, num_hidden_layers, 3)
        self.blob_density = blob_density
        self.blob_radius = blob_radius

    @property
    def aabb(self) -> Tensor:
        """(6,) bounding box (xmin, ymin, zmin, xmax, ymax, zmax)."""
        r = self.radius
        return torch.tensor([-r, -r, -r, r, r, r])

    def _encode(self, points: Tensor) -> Tensor:
        return self.encoding((points / self.radius + 1) / 2)

    def density_bias(self, points: Tensor) -> Tensor:
        """(P, 3) -> (P,) blob bias added before the softplus."""
        if self.blob_density == 0:
            return points.new_zeros(points.shape[0])
        return self.blob_density * (1 - points.norm(dim=-1) / self.blob_radius)

    def _inside(self, points: Tensor) -> Tensor:
        return (points.abs() <= self.radius).all(dim=-1)

    def forward(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Points (P, 3) -> density (P,) >= 0 and colour (P, 3) in [0, 1]."""
        features = self._encode(points)
        raw = self.density_head(features).squeeze(-1) + self.density_bias(points)
        density = F.softplus(raw) * self._inside(points)
        rgb = torch.sigmoid(self.color_head(features))
        return density, rgb

    def density(self, points: Tensor) -> Tensor:
        """Points (P, 3) -> density (P,)."""
        raw = self.density_head(self._encode(points)).squeeze(-1) + self.density_bias(points)
        return F.softplus(raw) * self._inside(points)

    def color(self, points: Tensor) -> Tensor:
        """Points (P, 3) -> diffuse colour (P, 3); used to colour DMTet mesh vertices."""
        return torch.sigmoid(self.color_head(self._encode(points)))

"""Volume compositing (the emission-absorption quadrature of NeRF), dense and packed.

Both forms compute, per ray, ``alpha_i = 1 - exp(-sigma_i * delta_i)``,
``T_i = exp(-sum_{j<i} sigma_j * delta_j)`` and ``w_i = T_i * alpha_i``.
The packed form takes a flat list of samples grouped by ray. Its per-ray exclusive cumulative
sum is computed on a padded (rays x max_samples) layout rather than as a global cumsum minus
per-ray offsets: the latter subtracts large float32 numbers and loses precision on long batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class CompositeResult:
    """Per-ray outputs of compositing.

    Attributes:
        rgb: (R, 3) foreground colour (premultiplied: not yet blended with a background).
        opacity: (R, 1) accumulated alpha.
        depth: (R, 1) expected distance along the ray (0 where opacity is 0).
        weights: per-sample weights, (R, S) for dense input or (S,) for packed input.
    """

    rgb: Tensor
    opacity: Tensor
    depth: Tensor
    weights: Tensor


def composite_dense(sigmas: Tensor, rgbs: Tensor, deltas: Tensor, t_mid: Tensor) -> CompositeResult:
    """Composite samples laid out per ray.

    Args:
        sigmas: (R, S) densities (0 for skipped samples).
        rgbs: (R, S, 3) colours.
        deltas: (R, S) sample interval lengths.
        t_mid: (R, S) sample distances along the ray.
    """
    tau = sigmas * deltas
    alpha = 1 - torch.exp(-tau)
    transmittance = torch.exp(-(torch.cumsum(tau, dim=1) - tau))
    weights = transmittance * alpha
    rgb = (weights[..., None] * rgbs).sum(dim=1)
    opacity = weights.sum(dim=1, keepdim=True)
    depth = (weights * t_mid).sum(dim=1, keepdim=True)
    return CompositeResult(rgb, opacity, depth, weights)


def packed_positions(ray_indices: Tensor, num_rays: int) -> tuple[Tensor, int]:
    """Position of each packed sample within its ray.

    Args:
        ray_indices: (S,) non-decreasing ray index of every sample.

    Returns:
        positions (S,), and the largest number of samples on one ray.
    """
    counts = torch.bincount(ray_indices, minlength=num_rays)
    starts = torch.cumsum(counts, 0) - counts
    positions = torch.arange(ray_indices.shape[0], device=ray_indices.device) - starts[ray_indices]
    return positions, int(counts.max()) if counts.numel() else 0


def composite_packed(
    sigmas: Tensor, rgbs: Tensor, deltas: Tensor, t_mid: Tensor, ray_indices: Tensor, num_rays: int
) -> CompositeResult:
    """Composite a flat list of samples grouped by ray (ordered by distance within a ray).

    Args:
        sigmas, deltas, t_mid: (S,)
        rgbs: (S, 3)
        ray_indices: (S,) non-decreasing ray index of each sample.
        num_rays: R.
    """
    if ray_indices.numel() > 1 and bool((ray_indices[1:] < ray_indices[:-1]).any()):
        raise ValueError("composite_packed: ray_indices must be sorted (samples grouped by ray)")
    positions, max_len = packed_positions(ray_indices, num_rays)
    tau = sigmas * deltas
    padded = tau.new_zeros(num_rays, max(max_len, 1)).index_put((ray_indices, positions), tau)
    exclusive = (torch.cumsum(padded, dim=1) - padded)[ray_indices, positions]
    weights = torch.exp(-exclusive) * (1 - torch.exp(-tau))
    rgb = rgbs.new_zeros(num_rays, 3).index_add(0, ray_indices, weights[:, None] * rgbs)
    opacity = weights.new_zeros(num_rays).index_add(0, ray_indices, weights)[:, None]
    depth = weights.new_zeros(num_rays).index_add(0, ray_indices, weights * t_mid)[:, None]
    return CompositeResult(rgb, opacity, depth, weights)

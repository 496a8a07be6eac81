"""Reward3D's view labels: which way each camera looks at the object, for its view prompts.

Reward3D scores each view under ``"{prompt}, {label} view"`` (see
:func:`~dreamreward.models.reward3d.preprocess.view_prompts`); the label comes from the camera's
elevation and azimuth (Z-up world, azimuth 0 on +X, :mod:`dreamreward.render.cameras`). The
cameras are the input everywhere else: Reward3D derives its labels here.
"""

from __future__ import annotations

import torch
from torch import Tensor

VIEW_LABELS: tuple[str, ...] = ("front", "side", "back", "overhead")


def view_labels(
    elevation_deg: Tensor,
    azimuth_deg: Tensor,
    front_half_width_deg: float = 30.0,
    overhead_above_deg: float = 60.0,
) -> list[str]:
    """Reward3D's view-dependent prompt suffix for each camera.

    ``overhead`` above ``overhead_above_deg`` elevation, else ``front`` within
    ±``front_half_width_deg`` of azimuth 0, ``back`` within that of 180, otherwise ``side``.

    Raises:
        ValueError: a NaN or infinite angle (a broken camera has no view to name; it would
            otherwise fall through every test and be called ``side``).
    """
    bad = ~(torch.isfinite(elevation_deg) & torch.isfinite(azimuth_deg))
    if bad.any():
        raise ValueError(
            f"cameras {bad.nonzero().flatten().tolist()[:8]} have a NaN or infinite elevation / "
            "azimuth (a camera-to-world matrix with NaN or infinite entries?)"
        )
    azim = torch.remainder(azimuth_deg + 180.0, 360.0) - 180.0  # (-180, 180]
    labels = []
    for elev, a in zip(elevation_deg.tolist(), azim.tolist(), strict=True):
        if elev > overhead_above_deg:
            labels.append("overhead")
        elif abs(a) <= front_half_width_deg:
            labels.append("front")
        elif abs(a) >= 180.0 - front_half_width_deg:
            labels.append("back")
        else:
            labels.append("side")
    return labels


def view_labels_from_c2w(c2w: Tensor, **thresholds: float) -> list[str]:
    """:func:`view_labels` of cameras given as (N, 4, 4) camera-to-world matrices (Z-up world,
    azimuth 0 on +X): the position's elevation and azimuth decide, as for orbit cameras."""
    if c2w.ndim != 3 or tuple(c2w.shape[1:]) != (4, 4):
        raise ValueError(f"expected camera-to-world matrices (N, 4, 4), got {tuple(c2w.shape)}")
    pos = c2w[:, :3, 3].detach().cpu().double()  # float64 on CPU: MPS has no float64
    elevation = torch.rad2deg(torch.atan2(pos[:, 2], pos[:, :2].norm(dim=-1)))
    azimuth = torch.rad2deg(torch.atan2(pos[:, 1], pos[:, 0]))
    return view_labels(elevation, azimuth, **thresholds)


def asset_view_labels(c2w: Tensor) -> list[list[str]]:
    """View labels of B assets' cameras: (B, 4, 4, 4) camera-to-world -> B lists of 4."""
    if c2w.ndim != 4 or tuple(c2w.shape[1:]) != (4, 4, 4):
        raise ValueError(f"expected cameras (B, 4, 4, 4) camera-to-world, got {tuple(c2w.shape)}")
    labels = view_labels_from_c2w(c2w.reshape(-1, 4, 4))
    return [labels[4 * i : 4 * i + 4] for i in range(c2w.shape[0])]

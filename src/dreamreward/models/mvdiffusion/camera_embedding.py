"""MVDream's camera condition: what the multi-view prior makes of a camera.

The prior's UNet takes 16 values per view (MVDream's ``camera_embed``); consumers pass
:class:`~dreamreward.render.cameras.Cameras` and the prior's side turns them into this.
"""

from __future__ import annotations

from torch import Tensor

from dreamreward.render.cameras import Cameras


def mvdream_camera_embedding(cameras: Cameras) -> Tensor:
    """(N, 16) MVDream camera condition: c2w with its translation scaled to unit length,
    flattened row-major (threestudio-mvdream's ``normalize_camera``; never in place)."""
    c2w = cameras.c2w.clone()
    translation = c2w[:, :3, 3]
    c2w[:, :3, 3] = translation / translation.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return c2w.reshape(len(cameras), 16)

"""The volume renderer and the rasterizer share one camera model: same pixels, same depth."""

import torch
import trimesh

from dreamreward.render.background import SolidBackground
from dreamreward.render.cameras import orbit_cameras
from dreamreward.render.encoding import MultiResolutionGridEncoding
from dreamreward.render.mesh import Mesh
from dreamreward.render.mesh_render import render_mesh
from dreamreward.render.nerf import NeRFField
from dreamreward.render.volume import VolumeRenderer

CENTRE = torch.tensor([0.25, -0.2, 0.15])  # off-centre, so a flipped axis would show
RADIUS = 0.3


class _OffsetBall(NeRFField):
    """A hard ball of density 200 at CENTRE."""

    def __init__(self) -> None:
        super().__init__(
            encoding=MultiResolutionGridEncoding(num_levels=1, base_resolution=4, max_resolution=4)
        )

    def forward(self, points):
        inside = ((points - CENTRE).norm(dim=-1) < RADIUS).float()
        return 200.0 * inside, torch.ones(points.shape[0], 3) * 0.5


def test_volume_and_raster_renders_agree_on_pixels_and_depth():
    cams = orbit_cameras(25.0, torch.tensor([30.0, 160.0]), 2.4, 40.0, 48, 40)
    ico = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    mesh = Mesh(torch.tensor(ico.vertices, dtype=torch.float32) + CENTRE, torch.tensor(ico.faces))
    raster = render_mesh(mesh, cams)
    volume = VolumeRenderer(num_samples_per_ray=256).render_cameras(
        _OffsetBall(), SolidBackground(), cams, use_occupancy=False
    )
    hard_volume = volume["opacity"][..., 0].detach() > 0.5
    hard_raster = raster["mask"][..., 0] > 0.5
    iou = (hard_volume & hard_raster).sum() / (hard_volume | hard_raster).sum()
    assert float(iou) > 0.95
    # The silhouette is off-centre in the image, the same way in both.
    ys, xs = torch.nonzero(hard_raster[0], as_tuple=True)
    vys, vxs = torch.nonzero(hard_volume[0], as_tuple=True)
    assert abs(float(xs.float().mean() - vxs.float().mean())) < 0.5
    assert abs(float(ys.float().mean() - vys.float().mean())) < 0.5
    # Depth means the same thing (distance along the camera's -Z) in both renderers.
    both = hard_volume & hard_raster
    depth_gap = (volume["depth"][..., 0].detach() - raster["depth"][..., 0]).abs()[both]
    assert float(depth_gap.median()) < 0.02

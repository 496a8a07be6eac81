import math

import pytest
import torch

from dreamreward.models.mvdiffusion.camera_embedding import mvdream_camera_embedding
from dreamreward.models.reward3d.view_labels import view_labels, view_labels_from_c2w
from dreamreward.render.cameras import (
    Cameras,
    OrbitCameraSampler,
    look_at,
    orbit_cameras,
)
from dreamreward.render.rays import generate_pinhole_rays, pixel_centers_ndc


def test_centre_ray_points_along_camera_minus_z():
    cams = orbit_cameras(25.0, torch.tensor([0.0, 73.0, 200.0]), 3.0, 40.0, width=9, height=9)
    origins, dirs = generate_pinhole_rays(cams)
    centre = dirs[:, 4, 4]
    minus_z = -cams.c2w[:, :3, 2]
    torch.testing.assert_close(centre, minus_z, atol=1e-6, rtol=0)
    # ... which looks at the origin from the camera centre.
    torch.testing.assert_close(centre, -cams.position / cams.position.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(origins[:, 0, 0], cams.position)


def test_pixel_centres_are_half_offset_row_zero_on_top():
    x, y = pixel_centers_ndc(4, 2)
    torch.testing.assert_close(x[0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    torch.testing.assert_close(y[:, 0], torch.tensor([0.5, -0.5]))


def test_look_at_is_orthonormal_and_z_up():
    eye = torch.tensor([[2.0, 1.0, 0.5], [0.0, -3.0, 1.0]])
    c2w = look_at(eye)
    rot = c2w[:, :3, :3]
    torch.testing.assert_close(
        rot.transpose(1, 2) @ rot, torch.eye(3).expand(2, 3, 3), atol=1e-6, rtol=0
    )
    assert torch.all(torch.linalg.det(rot) > 0)
    # camera up has a positive world-Z component, right is horizontal
    assert torch.all(rot[:, 2, 1] > 0)
    torch.testing.assert_close(rot[:, 2, 0], torch.zeros(2), atol=1e-6, rtol=0)


def test_project_inverts_rays():
    cams = orbit_cameras(10.0, torch.tensor([30.0]), 2.0, 50.0, width=8, height=6)
    origins, dirs = generate_pinhole_rays(cams)
    points = origins + 1.7 * dirs  # (1, H, W, 3)
    ndc = cams.project(cams.world_to_camera(points.reshape(1, -1, 3))).reshape(1, 6, 8, 2)
    x, y = pixel_centers_ndc(8, 6)
    torch.testing.assert_close(ndc[0, ..., 0], x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ndc[0, ..., 1], y, atol=1e-5, rtol=0)


def test_w2c_inverts_c2w():
    cams = orbit_cameras(40.0, torch.tensor([10.0, 100.0]), 2.5, 30.0, 16)
    torch.testing.assert_close(cams.w2c @ cams.c2w, torch.eye(4).expand(2, 4, 4), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"distance": 0.0}, "distance"),
        ({"fovy_deg": 0.0}, "fovy"),
        ({"fovy_deg": 180.0}, "fovy"),
    ],
)
def test_degenerate_cameras_raise(kwargs, match):
    args = {
        "elevation_deg": 0.0,
        "azimuth_deg": torch.tensor([0.0]),
        "distance": 2.0,
        "fovy_deg": 40.0,
        "width": 8,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        orbit_cameras(**args)


def test_eye_on_target_raises():
    with pytest.raises(ValueError, match="distance 0"):
        look_at(torch.zeros(1, 3))


def test_cameras_validate_fov_in_radians():
    with pytest.raises(ValueError, match="degrees"):
        Cameras(torch.eye(4)[None], torch.tensor([40.0]), 8, 8)


def test_orbit_sampler_follows_mvdream_recipe():
    sampler = OrbitCameraSampler(num_views=4, width=32)
    views = sampler.sample(3, torch.Generator().manual_seed(1))
    assert len(views.cameras) == 12
    elev = views.elevation_deg.view(3, 4)
    fovy = views.fovy_deg.view(3, 4)
    dist = views.distance.view(3, 4)
    for t in (elev, fovy, dist):  # shared within an object
        torch.testing.assert_close(t, t[:, :1].expand(3, 4))
    assert torch.all((elev >= 0) & (elev <= 30))
    assert torch.all((fovy >= 15) & (fovy <= 60))
    scale = dist * torch.tan(torch.deg2rad(fovy) / 2)
    assert torch.all((scale >= 0.8 - 1e-5) & (scale <= 1.0 + 1e-5))
    azim = views.azimuth_deg.view(3, 4)
    steps = torch.remainder(azim.diff(dim=1), 360.0)
    torch.testing.assert_close(steps, torch.full_like(steps, 90.0), atol=1e-4, rtol=0)
    assert len(view_labels_from_c2w(views.cameras.c2w)) == 12


def test_orbit_sampler_is_seeded():
    s = OrbitCameraSampler()
    a = s.sample(2, torch.Generator().manual_seed(5)).cameras.c2w
    b = s.sample(2, torch.Generator().manual_seed(5)).cameras.c2w
    torch.testing.assert_close(a, b)


def test_view_labels():
    labels = view_labels(
        torch.tensor([0.0, 10.0, 10.0, 10.0, 70.0, 0.0]),
        torch.tensor([0.0, 90.0, 180.0, -170.0, 0.0, 31.0]),
    )
    assert labels == ["front", "side", "back", "back", "overhead", "side"]


def test_mvdream_embedding_normalises_translation_without_mutating():
    cams = orbit_cameras(15.0, torch.tensor([0.0, 45.0]), 3.0, 40.0, 8)
    before = cams.c2w.clone()
    emb = mvdream_camera_embedding(cams)
    assert emb.shape == (2, 16)
    translation = emb.view(2, 4, 4)[:, :3, 3]
    torch.testing.assert_close(translation.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(cams.c2w, before)
    # rotation part untouched
    torch.testing.assert_close(emb.view(2, 4, 4)[:, :3, :3], before[:, :3, :3])


def test_aspect_ratio_sets_horizontal_fov():
    cams = orbit_cameras(0.0, torch.tensor([0.0]), 2.0, 60.0, width=16, height=8)
    assert math.isclose(float(cams.tan_half_fovx[0]), 2 * math.tan(math.radians(30)), rel_tol=1e-6)


def test_view_labels_refuse_nan_cameras():
    """A broken camera has no view to name (it used to fall through every test as "side")."""
    with pytest.raises(ValueError, match=r"cameras \[1\] have a NaN"):
        view_labels(torch.tensor([10.0, float("nan")]), torch.tensor([0.0, 0.0]))
    c2w = torch.full((2, 4, 4), float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        view_labels_from_c2w(c2w)

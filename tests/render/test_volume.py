import pytest
import torch

from dreamreward.render.background import LearnedBackground, SolidBackground
from dreamreward.render.cameras import orbit_cameras
from dreamreward.render.compositing import composite_dense, composite_packed
from dreamreward.render.encoding import MultiResolutionGridEncoding
from dreamreward.render.nerf import NeRFField
from dreamreward.render.occupancy import OccupancyGrid
from dreamreward.render.rays import generate_pinhole_rays, ray_aabb_intersect
from dreamreward.render.volume import VolumeRenderer


def _random_packed(num_rays=5, max_samples=7, dtype=torch.float64):
    counts = torch.randint(0, max_samples + 1, (num_rays,))
    ray_indices = torch.repeat_interleave(torch.arange(num_rays), counts)
    s = int(counts.sum())
    sigmas = torch.rand(s, dtype=dtype) * 3
    rgbs = torch.rand(s, 3, dtype=dtype)
    deltas = torch.rand(s, dtype=dtype) * 0.3 + 0.01
    t_mid = torch.rand(s, dtype=dtype)
    return sigmas, rgbs, deltas, t_mid, ray_indices, counts


def _to_dense(values, ray_indices, counts, fill=0.0):
    num_rays, width = counts.shape[0], max(int(counts.max()), 1)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(ray_indices.shape[0]) - starts[ray_indices]
    shape = (num_rays, width, *values.shape[1:])
    dense = torch.full(shape, fill, dtype=values.dtype)
    dense[ray_indices, pos] = values
    return dense


def test_packed_and_dense_compositing_agree():
    sigmas, rgbs, deltas, t_mid, ray_indices, counts = _random_packed(num_rays=9)
    packed = composite_packed(sigmas, rgbs, deltas, t_mid, ray_indices, 9)
    dense = composite_dense(
        _to_dense(sigmas, ray_indices, counts),
        _to_dense(rgbs, ray_indices, counts),
        _to_dense(deltas, ray_indices, counts),
        _to_dense(t_mid, ray_indices, counts),
    )
    torch.testing.assert_close(packed.rgb, dense.rgb)
    torch.testing.assert_close(packed.opacity, dense.opacity)
    torch.testing.assert_close(packed.depth, dense.depth)


def test_packed_compositing_is_precise_on_long_float32_batches():
    # 20k rays of 64 samples: a global cumsum minus offsets drifts; the padded layout must not.
    num_rays, per_ray = 20000, 64
    tau = torch.full((num_rays * per_ray,), 0.05)
    ray_indices = torch.arange(num_rays).repeat_interleave(per_ray)
    out = composite_packed(
        tau, torch.ones(tau.shape[0], 3), torch.ones_like(tau), tau, ray_indices, num_rays
    )
    expected = 1 - torch.exp(torch.tensor(-0.05 * per_ray))
    torch.testing.assert_close(out.opacity[-1, 0], expected, atol=1e-6, rtol=0)


def test_packed_requires_sorted_rays():
    with pytest.raises(ValueError, match="sorted"):
        composite_packed(
            torch.ones(2), torch.ones(2, 3), torch.ones(2), torch.ones(2), torch.tensor([1, 0]), 2
        )


def test_compositing_gradcheck():
    sigmas, rgbs, deltas, t_mid, ray_indices, _ = _random_packed(num_rays=3, max_samples=4)
    sigmas.requires_grad_(True)
    rgbs.requires_grad_(True)

    def packed(s, c):
        r = composite_packed(s, c, deltas, t_mid, ray_indices, 3)
        return r.rgb, r.opacity, r.depth

    assert torch.autograd.gradcheck(packed, (sigmas, rgbs))

    s = torch.rand(2, 5, dtype=torch.float64, requires_grad=True)
    c = torch.rand(2, 5, 3, dtype=torch.float64, requires_grad=True)
    d = torch.rand(2, 5, dtype=torch.float64) + 0.1

    def dense(s, c):
        r = composite_dense(s, c, d, d.cumsum(1))
        return r.rgb, r.opacity, r.depth

    assert torch.autograd.gradcheck(dense, (s, c))


def test_ray_aabb():
    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    o = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    t0, t1, hit = ray_aabb_intersect(o, d, aabb)
    assert hit.tolist() == [True, False, True]
    torch.testing.assert_close(t0[[0, 2]], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(t1[[0, 2]], torch.tensor([4.0, 1.0]))


class _BallField(NeRFField):
    """An analytic field: a dense red ball of radius 0.5 (for renderer checks)."""

    def __init__(self):
        super().__init__(
            encoding=MultiResolutionGridEncoding(
                num_levels=1, max_resolution=16, base_resolution=16
            )
        )
        self.scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, points):
        inside = (points.norm(dim=-1) < 0.5).float()
        rgb = torch.tensor([1.0, 0.0, 0.0]).expand(points.shape[0], 3) * self.scale
        return 50.0 * inside * self.scale, rgb

    def density(self, points):
        return self.forward(points)[0]


def _render(renderer, field, use_occupancy, size=24):
    cams = orbit_cameras(20.0, torch.tensor([0.0, 120.0]), 2.5, 40.0, size)
    return renderer.render_cameras(field, SolidBackground(), cams, use_occupancy=use_occupancy)


def test_occupancy_skipping_matches_dense_and_evaluates_fewer_samples():
    field = _BallField()
    renderer = VolumeRenderer(
        num_samples_per_ray=64, occupancy_grid=OccupancyGrid(resolution=16, density_threshold=1.0)
    )
    dense = _render(renderer, field, use_occupancy=False)
    assert renderer.update_occupancy(field, step=renderer.grid_warmup_steps)
    assert renderer.occupancy_grid.occupied_fraction < 0.3
    skipped = _render(renderer, field, use_occupancy=True)
    torch.testing.assert_close(skipped["rgb"], dense["rgb"], atol=1e-5, rtol=0)
    assert int(skipped["samples_evaluated"]) * 3 < int(dense["samples_evaluated"])
    # a red ball on white: centre pixel red, corner white
    torch.testing.assert_close(
        dense["rgb"][0, 12, 12], torch.tensor([1.0, 0.0, 0.0]), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(dense["rgb"][0, 0, 0], torch.ones(3))
    # expected depth at the centre: 2.5 - 0.5
    assert abs(float(dense["depth"][0, 12, 12].detach()) - 2.0) < 0.05


def test_occupancy_update_follows_schedule():
    renderer = VolumeRenderer(
        occupancy_grid=OccupancyGrid(resolution=8), grid_warmup_steps=10, grid_update_interval=4
    )
    field = _BallField()
    assert not renderer.update_occupancy(field, 5)
    assert not renderer.update_occupancy(field, 13)
    assert renderer.update_occupancy(field, 16)
    assert int(renderer.occupancy_grid.num_updates) == 1


def test_gradients_reach_the_field():
    field = NeRFField(
        encoding=MultiResolutionGridEncoding(num_levels=2, max_resolution=8, base_resolution=4)
    )
    renderer = VolumeRenderer(num_samples_per_ray=16)
    cams = orbit_cameras(0.0, torch.tensor([0.0]), 2.5, 40.0, 8)
    o, d = generate_pinhole_rays(cams)
    out = renderer(field, LearnedBackground(), o.reshape(-1, 3), d.reshape(-1, 3))
    out["rgb"].sum().backward()
    grads = [p.grad for p in field.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_nan_field_gives_clear_error():
    class NaNField(_BallField):
        def forward(self, points):
            d, c = super().forward(points)
            return d * float("nan"), c

    renderer = VolumeRenderer(num_samples_per_ray=8)
    o = torch.tensor([[-3.0, 0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    with pytest.raises(FloatingPointError, match="NaN"):
        renderer(NaNField(), SolidBackground(), o, d)


def test_blob_bias_makes_a_ball():
    field = NeRFField(blob_density=10.0, blob_radius=0.5)
    inside = field.density(torch.zeros(1, 3))
    outside = field.density(torch.tensor([[0.9, 0.0, 0.0]]))
    assert float(inside) > 5.0 > float(outside)
    assert float(field.density(torch.tensor([[1.5, 0.0, 0.0]]))) == 0.0


def test_grid_encoding_dense_and_hashed_levels():
    enc = MultiResolutionGridEncoding(
        num_levels=3,
        features_per_level=2,
        base_resolution=4,
        max_resolution=32,
        log2_hashmap_size=10,
    )
    kinds = [k for k, _ in enc._level_kind]
    assert kinds == ["dense", "hashed", "hashed"]
    x = torch.rand(100, 3, requires_grad=True)
    y = enc(x)
    assert y.shape == (100, enc.output_dim) == (100, 6)
    y.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    # trilinear: continuous across a cell border of the hashed level
    a = enc(torch.tensor([[0.5, 0.3, 0.3]]) - 1e-6)
    b = enc(torch.tensor([[0.5, 0.3, 0.3]]) + 1e-6)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"\(P, 3\)"):
        enc(torch.rand(4, 2))

"""Renderer benchmark: every figure is measured side by side in one run.

    python bench/render.py                 # CPU, writes bench/results/render_<device>.json
    python bench/render.py --device cuda   # the same on a GPU

1. Volume rendering fwd+bwd at 4 x 64^2 of a converged field (a NeRF fitted to the bundled ant
   here, ``--nerf-steps``): occupancy-grid skipping vs dense uniform sampling of the *same*
   samples, with the PSNR of each against the reference renders.
2. Rasterizer fwd+bwd (3-D features) at 4 x 64^2 and 4 x 256^2 on a ~20k-face mesh, and the
   soft silhouette at 4 x 64^2.
3. DMTet (marching tetrahedra) extraction fwd+bwd at grid resolutions 32 and 64.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import markdown_table, median_ms  # noqa: E402
from dreamreward.data.mesh_views import (  # noqa: E402
    MultiViewMeshDataModule,
    sample_training_batch,
)
from dreamreward.render.background import SolidBackground  # noqa: E402
from dreamreward.render.cameras import orbit_cameras  # noqa: E402
from dreamreward.render.dmtet import DMTetGeometry  # noqa: E402
from dreamreward.render.encoding import MultiResolutionGridEncoding  # noqa: E402
from dreamreward.render.mesh import Mesh  # noqa: E402
from dreamreward.render.mesh_render import render_mesh  # noqa: E402
from dreamreward.render.metrics import psnr  # noqa: E402
from dreamreward.render.nerf import NeRFField  # noqa: E402
from dreamreward.render.occupancy import OccupancyGrid  # noqa: E402
from dreamreward.render.rays import generate_pinhole_rays  # noqa: E402
from dreamreward.render.volume import VolumeRenderer  # noqa: E402


def fit_field(steps: int, device: torch.device) -> tuple[NeRFField, VolumeRenderer, dict]:
    """Fit a NeRF to the ant's 64^2 renders (the fit_mesh recipe) and return it converged."""
    data = MultiViewMeshDataModule(up_axis="y", image_size=64)
    data.setup()
    field = NeRFField(blob_density=0.0, encoding=MultiResolutionGridEncoding(log2_hashmap_size=22))
    renderer = VolumeRenderer(
        96, OccupancyGrid(resolution=48, density_threshold=0.5), grid_warmup_steps=32
    )
    field, renderer = field.to(device), renderer.to(device)
    background = SolidBackground().to(device)
    opt = torch.optim.Adam(field.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    views = data.train_views
    for step in range(steps):
        renderer.update_occupancy(field, step, torch.Generator().manual_seed(step))
        b = sample_training_batch(views, 4096, 4, torch.Generator().manual_seed(step))
        b = {k: v.to(device) for k, v in b.items()}
        out = renderer(field, background, b["rays_o"], b["rays_d"])
        loss = ((out["rgb"] - b["rays_rgb"]) ** 2).mean()
        loss = loss + 0.1 * ((out["opacity"] - b["rays_mask"]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return field, renderer, data.val_views


def bench_volume(field, renderer, val_views, device) -> list[dict]:
    renderer.train()
    cams = orbit_cameras(20.0, torch.tensor([22.5, 112.5, 202.5, 292.5]), 2.2, 45.0, 64)
    cams = cams.to(device)
    origins, dirs = generate_pinhole_rays(cams)
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    bg = SolidBackground().to(device)
    rows = []
    results = {}
    for name, skip in (("dense uniform", False), ("occupancy skipping", True)):

        def step(skip=skip):
            out = renderer(field, bg, o, d, stratified=False, use_occupancy=skip)
            out["rgb"].sum().backward()
            return out

        ms = median_ms(step, repeats=5)
        with torch.no_grad():
            images = renderer.render_cameras(field, bg, cams, use_occupancy=skip)
        quality = float(psnr(images["rgb"].cpu(), val_views["rgb"]).mean())
        samples = int(images["samples_evaluated"])
        results[name] = (ms, quality, images["rgb"])
        rows.append(
            {
                "volume render 4x64^2 fwd+bwd": name,
                "ms": ms,
                "field samples": samples,
                "Msamples/s": samples / ms / 1e3,
                "PSNR vs reference (dB)": quality,
            }
        )
    dense_ms, dense_q, dense_rgb = results["dense uniform"]
    skip_ms, skip_q, skip_rgb = results["occupancy skipping"]
    agreement = float(psnr(skip_rgb.cpu(), dense_rgb.cpu()).mean())
    rows.append(
        {
            "volume render 4x64^2 fwd+bwd": "speed-up (dense / skipping)",
            "ms": dense_ms / skip_ms,
            "field samples": "",
            "Msamples/s": "",
            "PSNR vs reference (dB)": dense_q - skip_q,
        }
    )
    print(f"  skipping vs dense render agreement: {agreement:.1f} dB PSNR")
    return rows


def icosphere_mesh(device) -> Mesh:
    import trimesh

    ico = trimesh.creation.icosphere(subdivisions=5, radius=0.7)  # 20480 faces
    verts = torch.tensor(ico.vertices, dtype=torch.float32)
    verts = verts * (1 + 0.05 * torch.sin(8 * verts[:, :1]) * torch.cos(6 * verts[:, 2:]))
    return Mesh(
        verts.to(device),
        torch.tensor(ico.faces, device=device),
        (verts * 0.5 + 0.5).clamp(0, 1).to(device),
    )


def bench_raster(device) -> list[dict]:
    mesh = icosphere_mesh(device)
    rows = []
    for size in (64, 256):
        cams = orbit_cameras(20.0, torch.tensor([0.0, 90.0, 180.0, 270.0]), 2.2, 45.0, size)
        cams = cams.to(device)
        verts = mesh.vertices.clone().requires_grad_(True)

        def step(soft=None, cams=cams, verts=verts):
            out = render_mesh(Mesh(verts, mesh.faces, mesh.vertex_colors), cams, soft_sigma=soft)
            (out["features"].sum() + out["alpha"].sum()).backward()

        rows.append(
            {
                "op": f"rasterize + interpolate 4x{size}^2, {mesh.num_faces} faces",
                "fwd+bwd ms": median_ms(step),
            }
        )
        if size == 64:
            rows.append(
                {
                    "op": f"rasterize + soft silhouette 4x{size}^2",
                    "fwd+bwd ms": median_ms(lambda step=step: step(1.0)),
                }
            )
    for res in (32, 64):
        dmtet = DMTetGeometry(res).to(device)
        dmtet.initialize_from_sdf(lambda p: p.norm(dim=-1) - 0.6)

        def extract(dmtet=dmtet):
            m = dmtet.extract_mesh()
            m.vertices.sum().backward()
            return m

        faces = extract().num_faces
        rows.append(
            {
                "op": f"DMTet extraction n={res} ({6 * res**3} tets, {faces} faces)",
                "fwd+bwd ms": median_ms(extract),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nerf-steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    env = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    print(f"environment: {env}")
    print(f"fitting a NeRF to the ant for {args.nerf_steps} steps ...")
    field, renderer, val_views = fit_field(args.nerf_steps, device)
    volume_rows = bench_volume(field, renderer, val_views, device)
    raster_rows = bench_raster(device)
    print(markdown_table(volume_rows))
    print()
    print(markdown_table(raster_rows))
    out = Path(args.out or Path(__file__).parent / "results" / f"render_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"environment": env, "volume": volume_rows, "raster": raster_rows}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

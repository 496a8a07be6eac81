"""Tiny DreamFL runs for the DreamFL, ranker, evaluation and resume tests: a module on the tiny
prior and geometry, a trainer for it, and a tiny config of the shipped DreamFL YAML."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import yaml

from _guidance_toys import Redness
from _tiny_prior import saved_minilm_prior, tiny_prior
from dreamreward.data.steps import OptimizationSteps
from dreamreward.guidance import RewardGuidance, ScoreDistillation, TimestepSchedule
from dreamreward.modules.dreamfl import DreamFLModule
from dreamreward.modules.two_stage_settings import AssetExport, MeshStage
from dreamreward.render.dmtet import DMTetGeometry
from dreamreward.render.encoding import MultiResolutionGridEncoding
from dreamreward.render.nerf import NeRFField
from dreamreward.render.occupancy import OccupancyGrid
from dreamreward.render.volume import VolumeRenderer

ROOT = Path(__file__).resolve().parents[1]


def tiny_dreamfl(reward: bool | RewardGuidance = True, **kw) -> DreamFLModule:
    torch.manual_seed(0)
    field = NeRFField(
        encoding=MultiResolutionGridEncoding(
            num_levels=2, features_per_level=2, base_resolution=4, max_resolution=8
        ),
        hidden_dim=16,
        blob_density=10.0,
    )
    renderer = VolumeRenderer(
        num_samples_per_ray=16, occupancy_grid=OccupancyGrid(resolution=8), grid_warmup_steps=2
    )
    guidance = ScoreDistillation(
        tiny_prior(), guidance_scale=5.0, timesteps=TimestepSchedule(anneal_steps=4)
    )
    term = RewardGuidance(Redness(), weight=0.5, objective="linear") if reward else None
    if isinstance(reward, RewardGuidance):
        term = reward
    args = dict(
        nerf_steps=2,
        nerf_resolution=8,
        mesh_resolution=8,
        eval_resolution=16,
        mesh_stage=MeshStage(isosurface_threshold=1.0),
        export=AssetExport(turntable_frames=2, turntable_size=16),
        views_resolution=24,
        prompt="a red cube",
    )
    args.update(kw)
    dmtet = args.pop("dmtet", None) or DMTetGeometry(grid_resolution=8)
    return DreamFLModule(field, renderer, dmtet, guidance, term, **args)


def fit(module, root, steps: int, ckpt_path=None, **kw) -> L.Trainer:
    trainer = L.Trainer(
        default_root_dir=root,
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **kw,
    )
    trainer.fit(module, datamodule=OptimizationSteps(steps_per_epoch=3), ckpt_path=ckpt_path)
    return trainer


def tiny_evaluation_setup(tmp_path):
    """A tiny DreamFL config (tiny saved prior, 3 steps) and a 2-prompt file."""
    _, prior_dir = saved_minilm_prior(tmp_path)
    config = yaml.safe_load((ROOT / "configs" / "dreamfl" / "primitives.yaml").read_text())
    model = config["model"]["init_args"]
    model.update(nerf_steps=2, nerf_resolution=8, mesh_resolution=8, eval_resolution=16)
    model.update(views_resolution=32, export={"turntable_frames": 2, "turntable_size": 16})
    model["mesh_stage"]["isosurface_threshold"] = 1.0
    model["field"]["init_args"]["encoding"]["init_args"].update(num_levels=2, max_resolution=16)
    model["volume_renderer"]["init_args"]["num_samples_per_ray"] = 16
    model["dmtet"]["init_args"]["grid_resolution"] = 8
    model["guidance"]["init_args"]["prior"] = {
        "class_path": "dreamreward.guidance.sources.SavedPrior",
        "init_args": {"path": str(prior_dir)},
    }
    model["reward"]["init_args"]["start_step"] = 0
    config["trainer"].update(max_steps=3, val_check_interval=3, enable_progress_bar=False)
    config["data"]["init_args"]["steps_per_epoch"] = 3
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(config))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na small blue cone next to a green sphere\n")
    return tiny, prompts

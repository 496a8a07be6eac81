"""``Reward3DModule``: fine-tune Reward3D on 4-view preference pairs (LoRA, freeze-bottom,
head-only or full), with the two baselines measured in the same run.

Loss: ``-log sigmoid(r_better - r_worse)`` (ImageReward's), over every pair of the batch. Batches
come from :class:`~dreamreward.data.preference.PreferenceDataModule` in either layout (pairs, or
prompt groups where each asset is scored once and all its pairs are formed from the scores).

Baselines (``baselines=True``): a frozen copy of the initial backbone gives the *zero-shot*
reward (initial backbone + initial head, i.e. the model before this run) and the features for a
*head-only* baseline, a second head trained on those frozen features during the same steps.
Validation and test report all three side by side, per split (held-out prompts, and the novel
compositions), with accuracy per failure type and per rating axis and the calibration error.

Fine-tuning modes:

- ``lora``: peft LoRA on the backbone's attention projections (``lora_target_modules``, default
  the backbone's list); the head and the layers no pretrained file provides (e.g. the CPU
  backbone's cross-attention) are trained fully (unless ``train_new_layers=False``) and saved
  with the adapter (``modules_to_save``).
- ``freeze_bottom``: ImageReward's recipe, the bottom ``freeze_fraction`` of each tower frozen.
- ``head_only``: only the head trains.
- ``full``: everything trains.

At the end of ``fit`` the best checkpoint (lowest validation loss) is exported (peft adapter or
full weights, see :mod:`dreamreward.models.reward3d.export`) to ``<log_dir>/reward3d``; after
``test`` the results table is written to ``<log_dir>/reward3d_eval.{json,md}``.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from dreamreward.data.preference import TEST_DATALOADERS, pairs_as_asset_batch
from dreamreward.models.reward3d.augmentation import ViewAugmentation
from dreamreward.models.reward3d.backbone import count_parameters, freeze_bottom_fraction
from dreamreward.models.reward3d.checkpoint import load_official_checkpoint
from dreamreward.models.reward3d.export import save_reward3d
from dreamreward.models.reward3d.model import Reward3D
from dreamreward.models.reward3d.view_labels import asset_view_labels
from dreamreward.modules.adversarial_views import adversarial_views
from dreamreward.modules.frozen_weights import restore_frozen_parameters
from dreamreward.modules.preference_metrics import (
    PreferenceMetrics,
    pairwise_correct,
    pairwise_logistic_loss,
)
from dreamreward.modules.reward3d_checkpoints import Reward3DCheckpoints
from dreamreward.modules.reward3d_report import MODELS, write_eval_table
from dreamreward.modules.reward3d_text_side import TextSideTerms
from dreamreward.world.prompt_edits import (
    EDIT_KINDS,
    edit_kind_odds,
)

log = logging.getLogger(__name__)

FinetuneMode = Literal["lora", "freeze_bottom", "head_only", "full"]


class Reward3DModule(Reward3DCheckpoints, TextSideTerms, L.LightningModule):
    """Train and evaluate a Reward3D on preference pairs.

    Args:
        reward: the model (e.g. ``Reward3D(backbone=CompactBackbone())``); None builds the
            official full-size BLIP model (load ``init_checkpoint`` into it).
        finetune: ``lora`` | ``freeze_bottom`` | ``head_only`` | ``full``.
        lora_rank, lora_alpha, lora_dropout: LoRA hyper-parameters.
        lora_target_modules: regex over module names (default: the backbone's attention
            projections, ``backbone.lora_target_modules``).
        freeze_fraction: bottom share of each tower frozen in ``freeze_bottom`` (0.7 as
            ImageReward).
        train_new_layers: in ``lora`` / ``freeze_bottom``, also train the layers no pretrained
            file initialised (the CPU backbone's cross-attention and token adapter).
        init_checkpoint: an official ``Reward3D_*.pt`` / ``ImageReward.pt`` loaded strictly before
            the adapters are added (BLIP backbone only).
        lr: learning rate of the backbone's trainable parameters (adapters, new layers).
        head_lr: learning rate of the heads.
        weight_decay: AdamW weight decay (not applied to biases and norms).
        warmup_steps: linear warm-up steps, then cosine decay to ``min_lr_ratio`` x lr at the last
            step (the schedule follows the optimizer step, so a resumed run keeps it).
        min_lr_ratio: final learning rate / initial.
        baselines: measure the zero-shot and head-only baselines in the same run.
        calibration_bins: bins of the calibration error.
        export_dir: where ``fit`` exports the best model (default ``<log_dir>/reward3d``).
        test_after_fit: ``python -m dreamreward fit`` runs ``test`` on the best checkpoint at the
            end (the results table then comes with every training run).
        prompt_swap_weight: weight of an auxiliary image-text matching term (an asset must score
            higher with its own prompt than with another prompt of the batch; 0 = off, the
            paper's loss alone). Preference pairs share their prompt, so without it nothing
            requires the reward to read the prompt; a backbone whose text encoder never saw
            images (the CPU one) needs it to learn grounding.
        prompt_edit_weight: weight of the text-side term: the correct asset of a prompt with a
            ground-truth scene must score higher under its own prompt or a paraphrase (a hard
            positive) than under a minimally edited prompt (another colour or shape, swapped
            colours, another relation, an object left out:
            :mod:`dreamreward.world.prompt_edits`; a hard negative). 0 = off. Validation and
            test always report the text side: how often the true prompt beats each kind of
            edit, and a prompt from outside the world's vocabulary.
        crossed_edit_weight: weight of the crossed term: for each correct asset with a
            ground-truth scene, the scene and one minimal edit of it are rendered from the same
            freshly drawn cameras, and each render is scored under both prompts; a softmax over
            the two prompts per render and over the two renders per prompt. A preference for one
            render or one prompt whatever the other cancels, so only reading the prompt *and*
            the image lowers it (the text side alone leaves image-blind solutions, the
            preference loss text-blind ones). 0 = off.
        crossed_edit_kinds: relative odds of each edit kind in the crossed term, e.g.
            ``{"colour": 3, "swapped colours": 3}`` (kinds not named keep odds 1; 0 never draws
            a kind). Default: every kind alike. Kinds are tried in a weighted random order
            until one applies to the scene and stays a training composition.
        crossed_edits_per_asset: edits of each correct asset in the crossed term, each of a
            different kind, each a pair of renders from its own ring of cameras (more colour
            pairs a step without a larger batch of preference pairs).
        train_augmentation: random zoom, shift and softening of every training view (the
            preference pairs', the text side's and the crossed term's renders; validation and
            test see the views as they are), so the reward judges content rather than exact
            pixels and its gradient on DreamFL's softer, off-centre renders means something.
            None = off.
        preference_weight: weight of the paper's preference loss (0: train the text side alone,
            e.g. on ``PreferenceDataModule(train_assets="correct")`` batches of correct assets).
        adversarial_epsilon, adversarial_steps: train on views pushed against the model's ranking
            (PGD, L2 ball of this RMS per value; 0 = off): modules/adversarial_views.py.
        init_weights: a ``Reward3DModule`` checkpoint (e.g. a run's ``last.ckpt``) or an export
            folder's LoRA adapter (e.g. the shipped model's), same model and fine-tuning set-up:
            loaded strictly before training (optimizer, schedule, step and baselines afresh).
        seed: dropout in step k draws from ``seed`` and k alone, so a resumed run repeats an
            uninterrupted one (the global RNG is not in Lightning's checkpoints).
    """

    def __init__(
        self,
        reward: Reward3D | None = None,
        finetune: FinetuneMode = "lora",
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        lora_target_modules: str | None = None,
        freeze_fraction: float = 0.7,
        train_new_layers: bool = True,
        init_checkpoint: str | None = None,
        lr: float = 3e-4,
        head_lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 20,
        min_lr_ratio: float = 0.05,
        baselines: bool = True,
        calibration_bins: int = 10,
        export_dir: str | None = None,
        test_after_fit: bool = True,
        prompt_swap_weight: float = 0.0,
        prompt_edit_weight: float = 0.0,
        crossed_edit_weight: float = 0.0,
        crossed_edit_kinds: dict[str, float] | None = None,
        crossed_edits_per_asset: int = 1,
        train_augmentation: ViewAugmentation | None = None,
        preference_weight: float = 1.0,
        adversarial_epsilon: float = 0.0,
        adversarial_steps: int = 2,
        init_weights: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["reward", "train_augmentation"])
        if finetune not in ("lora", "freeze_bottom", "head_only", "full"):
            raise ValueError(
                f"finetune must be lora | freeze_bottom | head_only | full, got {finetune!r}"
            )
        if lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {lora_rank}")
        for name, value in (("lr", lr), ("head_lr", head_lr)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"model.{name} must be a finite number > 0, got {value}")
        for name, value in (
            ("weight_decay", weight_decay),
            ("prompt_edit_weight", prompt_edit_weight),
            ("crossed_edit_weight", crossed_edit_weight),
            ("prompt_swap_weight", prompt_swap_weight),
            ("preference_weight", preference_weight),
            ("adversarial_epsilon", adversarial_epsilon),
            ("adversarial_steps", adversarial_steps),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"model.{name} must be a finite number >= 0, got {value}")
        if warmup_steps < 0:
            raise ValueError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
        self._crossed_kind_odds = edit_kind_odds(crossed_edit_kinds)
        if crossed_edits_per_asset < 1:
            raise ValueError(
                f"model.crossed_edits_per_asset must be >= 1, got {crossed_edits_per_asset}"
            )
        reward = reward if reward is not None else Reward3D()
        if init_checkpoint is not None:
            # Before LoRA: the official keys name the plain modules.
            report = load_official_checkpoint(reward, init_checkpoint)
            log.info("loaded %s (%s)", init_checkpoint, report)
        self.finetune = finetune
        self.test_after_fit = test_after_fit
        self.train_augmentation = train_augmentation
        self.baselines = baselines and finetune != "head_only"
        # Frozen copies taken before any adapter: the zero-shot model, and the head-only
        # baseline's feature extractor. The baseline head starts where the trained head starts.
        if self.baselines:
            self.reference_backbone = copy.deepcopy(reward.backbone).requires_grad_(False)
            self.initial_head = copy.deepcopy(reward.head).requires_grad_(False)
            self.baseline_head = copy.deepcopy(reward.head)
        self.model = self._configure_finetuning(reward)
        if init_weights is not None:
            self._load_init_weights(init_weights)
        self.metrics = nn.ModuleDict()
        self._groups: tuple[list[str], list[str]] = ([], [])
        self._test_results: dict[str, dict[str, dict[str, float]]] = {}
        # (split, model, edit kind) -> [true prompt won, comparisons]; prompts counted so far
        self._text_side: dict[tuple[str, str, str], list[int]] = {}
        self._text_side_seen: set[tuple[str, str]] = set()
        self._warned_no_text_side = False

    # ------------------------------------------------------------------ fine-tuning set-up
    @property
    def reward(self) -> Reward3D:
        """The Reward3D being trained (inside the peft wrapper in ``lora`` mode)."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            return self.model.get_base_model()  # type: ignore[return-value]
        return self.model  # type: ignore[return-value]

    def _configure_finetuning(self, reward: Reward3D) -> nn.Module:
        hp = self.hparams
        backbone = reward.backbone
        new_modules = [f"backbone.{name}" for name in backbone.new_module_names()]
        if self.finetune == "head_only":
            backbone.requires_grad_(False)
            return reward
        if self.finetune == "full":
            return reward.requires_grad_(True)
        if self.finetune == "freeze_bottom":
            freeze_bottom_fraction(backbone, hp.freeze_fraction)
            if hp.train_new_layers:
                for name in new_modules:
                    reward.get_submodule(name).requires_grad_(True)
            return reward
        from peft import LoraConfig, get_peft_model

        pattern = re.compile(hp.lora_target_modules or backbone.lora_target_modules)

        def is_new(name: str) -> bool:
            return any(name == n or name.startswith(n + ".") for n in new_modules)

        # New layers are saved whole with the adapter (``modules_to_save``) even when they are
        # not trained: the base model must be rebuildable from pretrained files alone.
        targets = [
            name
            for name, module in reward.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d))
            and pattern.fullmatch(name)
            and not is_new(name)
        ]
        if not targets:
            raise ValueError(
                f"lora_target_modules {pattern.pattern!r} matches no Linear/Conv2d module of "
                f"{type(backbone).__name__}"
            )
        config = LoraConfig(
            r=hp.lora_rank,
            lora_alpha=hp.lora_alpha,
            lora_dropout=hp.lora_dropout,
            target_modules=targets,
            modules_to_save=["head", *new_modules],
        )
        peft_model = get_peft_model(reward, config)
        if not hp.train_new_layers:
            for name in new_modules:
                peft_model.get_base_model().get_submodule(name).requires_grad_(False)
        return peft_model

    def trainable_summary(self) -> dict[str, int]:
        return {
            "reward3d_trainable": count_parameters(self.model, trainable_only=True),
            "reward3d_total": count_parameters(self.model),
        }

    # ------------------------------------------------------------------------- the rewards
    def _inputs(
        self, batch: dict[str, Any], prompts: list[str] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Asset batch -> images (A*4, 3, S, S), input_ids and attention_mask (A*4, L) of the
        view prompts of ``prompts`` (default each asset's own, ``batch["asset_prompt"]``)."""
        views = batch["views"]
        if views.ndim != 5 or views.shape[1] != 4 or views.shape[2] != 3:
            raise ValueError(
                f"expected views (A, 4, 3, H, W), got {tuple(views.shape)}: Reward3D needs "
                "exactly 4 RGB views per asset"
            )
        labels = asset_view_labels(batch["cameras"])
        return self.reward.encode_inputs(
            views, prompts or batch["asset_prompt"], labels, check_range=False
        )

    def _baseline_rewards(self, images: Tensor, ids: Tensor, mask: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            self.reference_backbone.eval()
            features = self.reference_backbone(images, ids, mask)
            zero_shot = self.initial_head.eval()(features).squeeze(-1)
        head_only = self.baseline_head(features).squeeze(-1)
        return {"zero_shot": zero_shot, "head_only": head_only}

    def _reward_from_tokens(self, image_tokens: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        """(A,) rewards of the trained model from precomputed image tokens (A*4, T, width):
        the model's own forward, split so the image tower runs once for several prompts."""
        reward = self.reward  # adapters are injected in place: its submodules run with them
        return reward.head(reward.backbone.encode_text(image_tokens, ids, mask)).squeeze(-1)

    def forward(self, batch: dict[str, Any], with_tokens: bool = False) -> dict[str, Tensor]:
        """Rewards (A,) of every asset of an asset batch, per model in :data:`MODELS` (and the
        trained model's image tokens under ``"image_tokens"`` when ``with_tokens``)."""
        images, ids, mask = self._inputs(batch)
        tokens = self.reward.backbone.visual_encoder(images)
        rewards = {"reward3d": self._reward_from_tokens(tokens, ids, mask)}
        if self.baselines:
            rewards |= self._baseline_rewards(images, ids, mask)
        if with_tokens:
            rewards["image_tokens"] = tokens
            rewards["images"] = images
        return rewards

    # ---------------------------------------------------------------------------- metrics
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        pairs = getattr(datamodule, "pairs", None) or {}
        defects = sorted({p.defect for split in pairs.values() for p in split})
        axes = sorted({p.axis for split in pairs.values() for p in split})
        self._groups = (defects, axes)
        for split in ("val", *TEST_DATALOADERS):
            for model in self._model_names():
                key = f"{split}_{model}"
                if key not in self.metrics:
                    self.metrics[key] = PreferenceMetrics(
                        defects, axes, self.hparams.calibration_bins
                    )

    def _model_names(self) -> tuple[str, ...]:
        return MODELS if self.baselines else MODELS[:1]

    # ---------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        batch = pairs_as_asset_batch(batch)
        torch.manual_seed(self.hparams.seed * 1_000_003 + self.global_step)
        swap_weight = self.hparams.prompt_swap_weight
        edit_weight = self.hparams.prompt_edit_weight
        crossed_weight = self.hparams.crossed_edit_weight
        if self.train_augmentation is not None:
            batch = {**batch, "views": self.train_augmentation(batch["views"])}
        better, worse = batch["better_index"], batch["worse_index"]
        if self.hparams.adversarial_epsilon > 0 and better.numel():
            batch = {**batch, "views": self._adversarial_views(batch, better, worse)}
        rewards = self(batch, with_tokens=swap_weight > 0 or edit_weight > 0)
        n_pairs, pair_weight = int(better.numel()), batch.get("pair_weight")
        terms: list[Tensor] = []
        # A batch of correct assets alone (``train_assets: correct``) has no pairs.
        if n_pairs and self.hparams.preference_weight > 0:
            r_better, r_worse = rewards["reward3d"][better], rewards["reward3d"][worse]
            loss = pairwise_logistic_loss(r_better, r_worse, pair_weight)
            with torch.no_grad():
                accuracy = pairwise_correct(r_better, r_worse).mean()
            self.log("train/loss", loss, prog_bar=True, batch_size=n_pairs)
            self.log("train/accuracy", accuracy, prog_bar=True, batch_size=n_pairs)
            terms.append(self.hparams.preference_weight * loss)
        if swap_weight > 0:
            swap_loss = self._prompt_swap_loss(batch, rewards)
            if swap_loss is not None:
                self.log("train/prompt_swap_loss", swap_loss, batch_size=len(batch["views"]))
                terms.append(swap_weight * swap_loss)
        if crossed_weight > 0:
            crossed_loss = self._crossed_edit_loss(batch)
            if crossed_loss is not None:
                self.log("train/crossed_edit_loss", crossed_loss, batch_size=len(batch["views"]))
                terms.append(crossed_weight * crossed_loss)
        if edit_weight > 0:
            edit_loss = self._prompt_edit_loss(batch, rewards)
            if edit_loss is not None:
                n_assets = len(batch["views"])
                self.log("train/prompt_edit_loss", edit_loss, prog_bar=True, batch_size=n_assets)
                terms.append(edit_weight * edit_loss)
        if self.baselines and n_pairs:
            head_only = rewards["head_only"]
            baseline_loss = pairwise_logistic_loss(head_only[better], head_only[worse], pair_weight)
            self.log("train/head_only_loss", baseline_loss, batch_size=n_pairs)
            terms.append(baseline_loss)  # disjoint parameters: the sum trains both
        if not terms:
            raise ValueError(
                f"training batch {batch_idx} gives no loss term: it has no preference pairs "
                f"({n_pairs}) or preference_weight is 0, and no text-side term applies "
                "(prompt_edit_weight / prompt_swap_weight 0, or no correct asset with a scene)"
            )
        total = torch.stack(terms).sum()
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"non-finite Reward3D loss at step {self.global_step} (batch {batch_idx}); the "
                "last checkpoint is intact: lower lr and resume from it"
            )
        return total

    def _adversarial_views(self, batch: dict[str, Any], better: Tensor, worse: Tensor) -> Tensor:
        """The batch's views (A, 4, 3, H, W) pushed against the trained model's ranking."""
        hp = self.hparams

        def loss_of_views(views: Tensor) -> Tensor:
            reward = self({**batch, "views": views})["reward3d"]
            return pairwise_logistic_loss(reward[better], reward[worse])

        generator = torch.Generator().manual_seed(hp.seed * 1_000_003 + self.global_step)
        return adversarial_views(
            loss_of_views, batch["views"], hp.adversarial_epsilon, hp.adversarial_steps, generator
        )

    # -------------------------------------------------------------------------- evaluation
    def _evaluate(self, split: str, batch: dict[str, Any]) -> None:
        batch = pairs_as_asset_batch(batch)
        rewards = self(batch, with_tokens=True)
        self._evaluate_text_side(split, batch, rewards)
        better, worse = batch["better_index"], batch["worse_index"]
        for model in self._model_names():
            self.metrics[f"{split}_{model}"].update(
                rewards[model][better], rewards[model][worse], batch["defect"], batch["axis"]
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(TEST_DATALOADERS[dataloader_idx], batch)

    def _log_split(self, split: str) -> dict[str, dict[str, float]]:
        self._text_side_seen = {key for key in self._text_side_seen if key[0] != split}
        results = {}
        for model in self._model_names():
            metrics = self.metrics[f"{split}_{model}"]
            values = metrics.compute()  # on every process (it syncs), even one without data
            metrics.reset()
            # taken out whether or not reported, so no count carries over to the next epoch
            text_side = {
                kind: self._text_side.pop((split, model, kind), (0, 0))
                for kind in (*EDIT_KINDS, "out of vocabulary")
            }
            if not values["pairs"]:
                continue
            for kind, (won, total) in text_side.items():
                if total:
                    values[f"text_side/{kind}"] = won / total
                    values[f"text_side_n/{kind}"] = float(total)
            rates = [won / total for won, total in text_side.values() if total]
            if rates:
                # one number to select a text-side run's checkpoint by (presets/grounding.yaml)
                values["text_side_mean"] = sum(rates) / len(rates)
            results[model] = values
            prefix = split if model == "reward3d" else f"{split}/{model}"
            for name, value in values.items():
                if name == "pairs" or name.startswith("text_side_n/"):
                    continue
                bar = model == "reward3d" and name in ("loss", "accuracy")
                self.log(f"{prefix}/{name}", value, prog_bar=bar, sync_dist=False)
        return results

    def _gather_text_side(self) -> None:
        """Sum the text-side counts of every process (each saw its share of the batches)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size < 2 or not torch.distributed.is_initialized():
            return
        parts: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(parts, self._text_side)
        total: dict[tuple[str, str, str], list[int]] = {}
        for part in parts:
            for key, (won, n) in part.items():
                count = total.setdefault(key, [0, 0])
                count[0] += won
                count[1] += n
        self._text_side = total

    def on_validation_epoch_end(self) -> None:
        self._gather_text_side()
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._gather_text_side()
        self._test_results = {split: self._log_split(split) for split in TEST_DATALOADERS}
        if self.trainer.is_global_zero and self.trainer.log_dir:
            write_eval_table(self._test_results, Path(self.trainer.log_dir))

    # ------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        heads = [self.reward.head, *([self.baseline_head] if self.baselines else [])]
        head_ids = {id(p) for head in heads for p in head.parameters()}
        head_params, head_no_decay, decay, no_decay = [], [], [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            if id(p) in head_ids:
                (head_params if p.ndim >= 2 else head_no_decay).append(p)
            elif p.ndim < 2:
                no_decay.append(p)
            else:
                decay.append(p)
        groups = [
            {"params": decay, "lr": hp.lr, "weight_decay": hp.weight_decay},
            {"params": no_decay, "lr": hp.lr, "weight_decay": 0.0},
            {"params": head_params, "lr": hp.head_lr, "weight_decay": hp.weight_decay},
            {"params": head_no_decay, "lr": hp.head_lr, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]])
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = min(hp.warmup_steps, max(total - 1, 0))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ----------------------------------------------------------------------------- export
    def on_fit_end(self) -> None:
        """Export the best checkpoint's model (by the checkpoint callback's monitor: the
        validation loss, or the text side in ``presets/text_side.yaml``) for scoring and DreamFL.
        The notes name the monitor, its best value and the step of the exported weights."""
        trainer = self.trainer
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback else ""
        best_step = trainer.global_step
        if best:
            checkpoint = torch.load(best, map_location="cpu", weights_only=True)
            restore_frozen_parameters(checkpoint, self, best)
            self.load_state_dict(checkpoint["state_dict"], strict=True)
            best_step = int(checkpoint.get("global_step", best_step))
        if not trainer.is_global_zero:
            return
        folder = self.hparams.export_dir or (
            str(Path(trainer.log_dir) / "reward3d") if trainer.log_dir else None
        )
        if folder is None:
            return
        score = getattr(callback, "best_model_score", None) if callback is not None else None
        notes = {
            "finetune": self.finetune,
            "best_checkpoint": best or None,
            "best_monitor": getattr(callback, "monitor", None) if callback is not None else None,
            "best_score": float(score) if score is not None else None,
            "global_step": best_step,  # of the exported weights
            "trained_steps": trainer.global_step,
            **self.trainable_summary(),
        }
        save_reward3d(self.model, folder, notes, base_checkpoint=self.hparams.init_checkpoint)
        log.info("exported Reward3D to %s", folder)

"""What a Reward3D checkpoint holds and how one is read back: resuming, ``init_weights``.

- Checkpoints leave out the frozen pretrained weights (the towers' base weights and the
  baselines' frozen copies of them): they are rebuilt with the module from their own files.
  Each is recorded by a digest of its bytes, checked on load, so a run resumed on other base
  weights is refused by name (a checkpoint of the CPU-scale model: 76.9 MB instead of 180.8).
- A resume must match the fine-tuning layout (settings, and the trained tensors' keys/shapes).
- ``init_weights`` starts a run from another run's model: a Lightning checkpoint's ``model.*``
  tensors, or an export folder's LoRA adapter.

:class:`Reward3DCheckpoints` is a mixin of ``Reward3DModule``: it uses the module's ``model``,
``reward`` and ``hparams``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from dreamreward.models.weight_errors import check_state_dict
from dreamreward.modules.frozen_weights import (
    drop_frozen_parameters,
    frozen_parameter_names,
    restore_frozen_parameters,
)
from dreamreward.modules.init_from_export import load_export_adapter
from dreamreward.modules.resume_check import check_resume_matches

log = logging.getLogger(__name__)


class Reward3DCheckpoints:
    """Saving, resuming and ``init_weights`` for ``Reward3DModule``."""

    # What makes a checkpoint this run's: the fine-tuning layout (the trained tensors' keys and
    # shapes are compared too).
    _RESUME_MUST_MATCH = ("finetune", "lora_rank", "lora_alpha", "lora_target_modules")

    # The frozen pretrained weights (the towers' base weights, the baselines' frozen copies of
    # them) are rebuilt with the module from their own files, so checkpoints leave them out and
    # record a digest of each to check on load. Frozen layers drawn at random (new layers, the
    # head, peft's untouched copies of the trained ones) stay: their values depend on how many
    # random numbers the process drew before building the model, not only on the seed.
    _DRAWN_AT_RANDOM = frozenset({"head", "initial_head", "baseline_head", "original_module"})

    def rebuilt_frozen_parameters(self) -> list[str]:
        """State-dict keys of the frozen parameters that come from pretrained files."""
        new = tuple(f"backbone.{name}." for name in self.reward.backbone.new_module_names())
        return [
            name
            for name in frozen_parameter_names(self)
            if not any(part in name for part in new)
            and not self._DRAWN_AT_RANDOM.intersection(name.split("."))
        ]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        drop_frozen_parameters(checkpoint, self.rebuilt_frozen_parameters())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = self._trainer
        source = str(trainer.ckpt_path) if trainer is not None and trainer.ckpt_path else None
        restore_frozen_parameters(checkpoint, self, source)
        check_resume_matches(self, checkpoint, self._RESUME_MUST_MATCH, source)

    def _load_init_weights(self, path: str) -> None:
        """The ``model.*`` tensors of a Reward3DModule checkpoint, loaded strictly."""
        file = Path(path)
        if file.is_dir():  # an export folder (e.g. the shipped model's): its LoRA adapter
            return load_export_adapter(self.model, file)
        if not file.is_file():
            raise FileNotFoundError(f"init_weights: no checkpoint at {file}")
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise ValueError(f"init_weights: {file} is not a Lightning checkpoint (no state_dict)")
        restore_frozen_parameters(checkpoint, self, f"{file} (init_weights)", prefix="model.")
        state = {
            key.removeprefix("model."): value
            for key, value in checkpoint["state_dict"].items()
            if key.startswith("model.")
        }
        check_state_dict(
            self.model.state_dict(), state, "init_weights do not fit this model", path=file
        )
        self.model.load_state_dict(state, strict=True)
        log.info("loaded the model weights of %s", file)

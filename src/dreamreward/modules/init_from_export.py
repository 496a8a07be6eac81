"""Start a LoRA fine-tune from an exported Reward3D: its adapter loaded into the new one.

An export folder (:mod:`dreamreward.models.reward3d.export`, e.g. the shipped model) keeps the
trained LoRA matrices and fully trained layers as peft's ``adapter/``; a run whose LoRA set-up is
the same (rank, targets, new layers) continues from exactly those tensors
(``Reward3DModule(init_weights=<export folder>)``), with the optimizer and schedule afresh.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from dreamreward.models.reward3d.export import ADAPTER_DIR, ADAPTER_WEIGHTS
from dreamreward.models.weight_errors import check_state_dict

log = logging.getLogger(__name__)


def load_export_adapter(model: nn.Module, folder: Path) -> None:
    """Load ``folder/adapter/adapter_model.safetensors`` into ``model`` (a ``PeftModel``),
    strictly: every adapter tensor of the model is in the file with its shape, and no other.

    Raises:
        ValueError: the folder has no adapter (a full-weights export, or not an export), or the
            run does not fine-tune with LoRA.
        CheckpointMismatchError: the adapter's tensors do not fit (another rank or targets).
    """
    from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter = folder / ADAPTER_DIR / ADAPTER_WEIGHTS
    if not adapter.is_file():
        raise ValueError(
            f"init_weights: {folder} is a folder but has no {ADAPTER_DIR}/{ADAPTER_WEIGHTS}: give "
            "a Reward3D export with a LoRA adapter, or a Lightning checkpoint file"
        )
    if not isinstance(model, PeftModel):
        raise ValueError(
            f"init_weights: {folder} holds a LoRA adapter; it initialises finetune=lora runs only"
        )
    state = load_file(str(adapter))
    check_state_dict(
        get_peft_model_state_dict(model), state, "init_weights do not fit this model", path=adapter
    )
    set_peft_model_state_dict(model, state)
    log.info("loaded the adapter of %s", folder)

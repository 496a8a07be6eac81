"""Keep frozen, rebuildable sub-models (a text encoder, a diffusion prior, a reward model) out of
Lightning checkpoints: they come back from their own files when the module is built, so saving
them only makes every checkpoint larger (MiniLM alone is 90 MB)."""

from __future__ import annotations

from typing import Any

from torch import nn


def drop_frozen(checkpoint: dict[str, Any], prefixes: tuple[str, ...]) -> None:
    """Remove the state-dict entries under ``prefixes`` (call from ``on_save_checkpoint``)."""
    state = checkpoint["state_dict"]
    for key in [k for k in state if k.startswith(prefixes)]:
        del state[key]


def restore_frozen(
    module: nn.Module, checkpoint: dict[str, Any], prefixes: tuple[str, ...]
) -> None:
    """Put the module's current entries under ``prefixes`` back into a loaded checkpoint, so
    strict loading sees every key (call from ``on_load_checkpoint``)."""
    state = checkpoint["state_dict"]
    for key, value in module.state_dict().items():
        if key.startswith(prefixes):
            state.setdefault(key, value)

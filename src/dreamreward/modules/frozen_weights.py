"""Keep frozen, rebuildable sub-models (a text encoder, a diffusion prior, a reward model) out of
Lightning checkpoints: they come back from their own files when the module is built, so saving
them only makes every checkpoint larger (MiniLM alone is 90 MB)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import torch
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


# --------------------------------------------------------------------- checked by digest
# Where a module's frozen parameters are not one sub-model under a prefix (Reward3D's LoRA
# layout freezes the base weights inside every wrapped layer), they are dropped one by one and
# each is recorded by a digest of its bytes, so loading can tell a rebuilt base that equals the
# one the run trained on from one that does not (other package weights, another seed), instead
# of resuming silently on top of different weights.
FROZEN_DIGESTS = "frozen_parameter_digests"


def frozen_parameter_names(module: nn.Module) -> list[str]:
    """State-dict keys of ``module``'s parameters that do not train (tied names included)."""
    return [
        name
        for name, parameter in module.named_parameters(remove_duplicate=False)
        if not parameter.requires_grad
    ]


def tensor_digest(tensor: torch.Tensor) -> str:
    """A short digest of a tensor's dtype, shape and bytes (equal iff bit-identical, bar
    collisions of a 64-bit hash)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def drop_frozen_parameters(checkpoint: dict[str, Any], names: Iterable[str]) -> None:
    """Remove the frozen parameters ``names`` (ones the module rebuilds from files when it is
    built) from ``checkpoint["state_dict"]`` and record their digests under
    :data:`FROZEN_DIGESTS` (call from ``on_save_checkpoint``). Buffers are not for this: they
    are small, and some (batch-norm statistics) change in training."""
    state = checkpoint["state_dict"]
    digests = {}
    for name in names:
        if name in state:
            digests[name] = tensor_digest(state.pop(name))
    checkpoint[FROZEN_DIGESTS] = digests


def restore_frozen_parameters(
    checkpoint: dict[str, Any],
    module: nn.Module,
    source: str | None = None,
    prefix: str = "",
) -> None:
    """Put back the frozen parameters :func:`drop_frozen_parameters` left out, from ``module``
    as built now, after checking each against its recorded digest (call before loading the
    state dict). A checkpoint saved in full (no digests) is left as it is.

    Args:
        checkpoint: a loaded Lightning checkpoint.
        module: the module being loaded (its current frozen parameters fill the gaps).
        source: the checkpoint's path, for the message.
        prefix: restore only the keys under this prefix (e.g. ``"model."`` when only the
            model's tensors will be read).

    Raises:
        ValueError: a frozen parameter of this build differs from the one the checkpoint was
            trained with, naming the first few.
    """
    digests = checkpoint.get(FROZEN_DIGESTS)
    if not digests:
        return
    own = dict(module.named_parameters(remove_duplicate=False))
    state = checkpoint["state_dict"]
    differing = []
    for name, digest in digests.items():
        if not name.startswith(prefix) or name not in own:
            continue  # a key this module lacks: strict loading names it
        if tensor_digest(own[name]) != digest:
            differing.append(name)
        state.setdefault(name, own[name].detach())
    if differing:
        where = f"checkpoint {source}" if source else "the checkpoint"
        raise ValueError(
            f"{where} was saved without its frozen weights (they are rebuilt with the model), "
            f"but {len(differing)} of them differ in this build, e.g. {differing[:3]}: build the "
            "model as the run did (the same base weight files, backbone settings and seed)"
        )

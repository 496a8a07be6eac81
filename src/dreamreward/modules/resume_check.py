"""Refuse to resume from a checkpoint that belongs to a different run.

Lightning restores whatever ``--ckpt_path`` points at: a checkpoint of another prompt would
silently continue optimising an asset for the wrong text, and one of another geometry size fails
deep inside ``load_state_dict`` with a bare tensor-size message. :func:`check_resume_matches`
compares the settings that define the run and the shapes of the trainable state first, and names
what differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn


def check_resume_matches(
    module: nn.Module,
    checkpoint: dict[str, Any],
    hparam_names: Iterable[str],
    source: str | None = None,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Raise ``ValueError`` if ``checkpoint`` was made with other settings or shapes.

    Args:
        module: the LightningModule being resumed (its ``hparams`` and ``state_dict``).
        checkpoint: the loaded Lightning checkpoint (``hyper_parameters``, ``state_dict``).
        hparam_names: hyper-parameters that must be equal (e.g. the prompt, the stage lengths);
            ``group.field`` names a field of a group saved as a dict.
        source: the checkpoint path, for the message.
        ignore_prefixes: state-dict entries not compared (frozen sub-models that checkpoints
            leave out and the module rebuilds).
    """
    where = f"checkpoint {source}" if source else "the checkpoint"
    saved = checkpoint.get("hyper_parameters", {})
    current = getattr(module, "hparams", {})
    problems = []
    for name in hparam_names:
        theirs_value, ours_value = _lookup(saved, name), _lookup(current, name)
        known = theirs_value is not _MISSING and ours_value is not _MISSING
        if known and theirs_value != ours_value:
            problems.append(
                f"{name}: {theirs_value!r} in the checkpoint, {ours_value!r} in the config"
            )
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(ignore_prefixes)}
    theirs = {
        k: v
        for k, v in checkpoint.get("state_dict", {}).items()
        if not k.startswith(ignore_prefixes)
    }
    for key, value in theirs.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            problems.append(
                f"{key}: shape {tuple(value.shape)} in the checkpoint, {tuple(own[key].shape)} "
                "in the config"
            )
    only_theirs = sorted(theirs.keys() - own.keys())
    only_ours = sorted(own.keys() - theirs.keys())
    if only_theirs:
        problems.append(f"in the checkpoint only: {_listing(only_theirs)}")
    if only_ours:
        problems.append(f"in the config only: {_listing(only_ours)}")
    if problems:
        raise ValueError(
            f"{where} does not match this config, so it cannot be resumed:\n  "
            + "\n  ".join(problems)
            + "\nresume with the config the run was started with (saved as config.yaml in its "
            "log folder), or start a new run without --ckpt_path"
        )


_MISSING = object()


def _lookup(hparams: Any, dotted: str) -> Any:
    """``hparams["a"]["b"]`` for ``"a.b"`` (``_MISSING`` where a part is absent)."""
    value = hparams
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _listing(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")

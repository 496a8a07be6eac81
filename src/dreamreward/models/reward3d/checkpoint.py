"""Strict loading of the official Reward3D / ImageReward checkpoints, and the reverse key map.

The official files (``Reward3D_Scorer.pt``, ``Reward3D_CrossViewFusion.pt`` from HF
``yejunliang23/Reward3D``; ``ImageReward.pt``) are bare pickled state dicts. The official code loads
them with ``strict=False`` and never checks; here:

- the file is read with ``torch.load(weights_only=True)``: only tensors and plain containers are
  unpickled, so a file carrying code (custom classes) is refused, never executed;
- every official key is mapped onto our modules by prefix (our module names below each prefix are
  the official ones, see ``reward3d.blip``):

  =============================  ===================================
  official                       ours
  =============================  ===================================
  ``blip.visual_encoder.*``      ``backbone.visual_encoder.*``
  ``blip.text_encoder.*``        ``backbone.text_encoder.*``
  ``mlp.layers.{0,2,4,6,7}.*``   ``head.mlp.layers.*``
  ``Scorer.fc{1,2,3}.*``         ``head.fc{1,2,3}.*``  (scorer)
  ``cross_view_adapter.*``       ``head.*``  (``self_attn``, ``fusion_gate.0``; fusion)
  ``blip.vision_proj.*``,        known-unused (BLIP's contrastive projections, never called by
  ``blip.text_proj.*``           Reward3D): shape-checked, reported, not loaded
  =============================  ===================================

- any missing key, unexpected key, shape or dtype-kind mismatch raises ``CheckpointMismatchError``
  listing all of them and naming the file; so does a checkpoint of the wrong kind. One tolerance:
  the deterministic buffer ``blip.text_encoder.embeddings.position_ids`` (``arange(512)``) may be
  absent (newer transformers no longer save it); it then keeps its default and is reported.

At full size the map expects 631 keys for either head (294 ViT + 317 text incl. ``position_ids`` +
4 unused projections + 10 MLP + 6 head tensors); ``ImageReward.pt`` has the 625 without a 3D head.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from dreamreward.models.reward3d.blip import BlipBackbone
from dreamreward.models.reward3d.model import Reward3D
from dreamreward.models.weight_errors import CheckpointFormatError, CheckpointMismatchError

log = logging.getLogger(__name__)

CheckpointKind = Literal["scorer", "cross_view_fusion", "imagereward"]

POSITION_IDS_KEY = "blip.text_encoder.embeddings.position_ids"
BLIP_EMBED_DIM = 256
"""Output width of BLIP's unused ``vision_proj`` / ``text_proj``."""

# (official prefix, our prefix), most specific first so that the reverse direction is unambiguous.
_SHARED_RULES: tuple[tuple[str, str], ...] = (
    ("blip.", "backbone."),
    ("mlp.", "head.mlp."),
)
_HEAD_RULES: dict[str, tuple[str, str]] = {
    "scorer": ("Scorer.", "head."),
    "cross_view_fusion": ("cross_view_adapter.", "head."),
}
_UNUSED_PREFIXES = ("blip.vision_proj.", "blip.text_proj.")
_MAX_LISTED = 25


@dataclass(frozen=True)
class LoadReport:
    """What ``load_official_checkpoint`` did.

    Attributes:
        path: the file.
        kind: ``scorer``, ``cross_view_fusion`` or ``imagereward``.
        loaded: number of model tensors set from the file.
        unused_keys: official keys present in the file and deliberately not loaded.
        defaulted_keys: deterministic buffers absent from the file, left at their default.
        initialised_keys: our parameters the file does not provide (only for ``ImageReward.pt``,
            which has no 3D head): they keep their initialisation and must be trained.
    """

    path: str
    kind: CheckpointKind
    loaded: int
    unused_keys: tuple[str, ...] = field(default_factory=tuple)
    defaulted_keys: tuple[str, ...] = field(default_factory=tuple)
    initialised_keys: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------- key maps
def _require_blip(model: Reward3D) -> None:
    if not isinstance(model, Reward3D) or not isinstance(model.backbone, BlipBackbone):
        raise TypeError(
            "official checkpoints load into a Reward3D with the BLIP backbone, got "
            f"{type(model).__name__} (load before wrapping the model with peft)"
        )


def _rules(head: str) -> tuple[tuple[str, str], ...]:
    return (*_SHARED_RULES, _HEAD_RULES[head])


def to_official_key(key: str, head: str) -> str:
    """Our state-dict key -> the official name (``head`` is the model's head kind)."""
    for official, ours in sorted(_rules(head), key=lambda rule: -len(rule[1])):
        if key.startswith(ours):
            return official + key[len(ours) :]
    raise KeyError(f"no official name for model key {key!r}")


def official_key_map(model: Reward3D) -> dict[str, str]:
    """{official key: our key} for every tensor of ``model``'s state dict (unused ones excluded)."""
    _require_blip(model)
    return {to_official_key(k, model.head_kind): k for k in model.state_dict()}


def unused_official_shapes(model: Reward3D) -> dict[str, tuple[int, ...]]:
    """The known-unused official tensors (BLIP's contrastive projections) and their shapes."""
    vision_width = model.backbone.visual_encoder.width
    text_width = model.backbone.text_encoder.width
    return {
        "blip.vision_proj.weight": (BLIP_EMBED_DIM, vision_width),
        "blip.vision_proj.bias": (BLIP_EMBED_DIM,),
        "blip.text_proj.weight": (BLIP_EMBED_DIM, text_width),
        "blip.text_proj.bias": (BLIP_EMBED_DIM,),
    }


def official_keys(model: Reward3D, include_unused: bool = True) -> list[str]:
    """Every key an official checkpoint for ``model`` holds (631 at full size, either head)."""
    keys = list(official_key_map(model))
    return keys + list(unused_official_shapes(model)) if include_unused else keys


def to_official_state_dict(model: Reward3D, include_unused: bool = False) -> dict[str, Tensor]:
    """``model``'s weights under the official names (detached, sharing storage).

    With ``include_unused`` the BLIP projections the official files carry are added as zero
    placeholders of the official shapes, so the result has exactly the official key set.
    """
    key_map = official_key_map(model)
    ours = model.state_dict()
    out = {official: ours[key].detach() for official, key in key_map.items()}
    if include_unused:
        ref = ours[key_map["mlp.layers.0.weight"]]
        for key, shape in unused_official_shapes(model).items():
            out[key] = torch.zeros(shape, dtype=ref.dtype, device=ref.device)
    return out


# ------------------------------------------------------------------------------------ reading
def read_state_dict(path: str | os.PathLike[str], mmap: bool = False) -> dict[str, Tensor]:
    """Read a bare state dict with ``torch.load(weights_only=True, map_location="cpu")``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointFormatError: unreadable, refused by ``weights_only`` (custom classes, code), or
            not a flat ``{str: Tensor}`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist: download Reward3D_Scorer.pt / "
            "Reward3D_CrossViewFusion.pt (HF yejunliang23/Reward3D) or ImageReward.pt and pass its "
            "local path"
        )
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)
    except pickle.UnpicklingError as err:
        # torch's message is long; keep the line that names the refused class.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"it references {found.group(1)}" if found else str(err).splitlines()[0]
        raise CheckpointFormatError(
            f"{path} is not a plain state dict: torch.load(weights_only=True) refused it because "
            f"it holds objects other than tensors and plain containers ({what}). Pickles can "
            "run code, so it is not loaded. If you trust the file, re-save only its tensors "
            "(torch.save(state_dict, ...)) in a sandbox and load that."
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointFormatError(f"{path} could not be read as a torch file: {err}") from err
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{path} holds a {type(obj).__name__}, expected a state dict {{name: tensor}}"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        nested = [k for k in bad if isinstance(obj[k], Mapping)]
        hint = (
            f" (entry {nested[0]!r} is itself a dict: is this a training checkpoint? extract its "
            "model state dict first)"
            if nested
            else ""
        )
        raise CheckpointFormatError(
            f"{path} is not a flat state dict of tensors: entries {bad[:5]} are not tensors{hint}"
        )
    return dict(obj)


def detect_checkpoint_kind(
    state_dict: Mapping[str, Tensor], path: str | os.PathLike[str] | None = None
) -> CheckpointKind:
    """``scorer`` (``Scorer.*``), ``cross_view_fusion`` (``cross_view_adapter.*``) or
    ``imagereward`` (``blip.*`` + ``mlp.*`` only); anything else raises CheckpointMismatchError."""
    where = f"checkpoint {path}" if path is not None else "state dict"
    scorer = sorted(k for k in state_dict if k.startswith("Scorer."))
    fusion = sorted(k for k in state_dict if k.startswith("cross_view_adapter."))
    if scorer and fusion:
        raise CheckpointMismatchError(
            f"{where} has both a scorer head ({scorer[0]}) and a fusion head ({fusion[0]}): "
            "not an official Reward3D checkpoint",
            path,
            unexpected=scorer + fusion,
        )
    if scorer:
        return "scorer"
    if fusion:
        return "cross_view_fusion"
    if any(k.startswith("blip.") for k in state_dict) and any(
        k.startswith("mlp.") for k in state_dict
    ):
        return "imagereward"
    sample = sorted(state_dict)[:5]
    raise CheckpointMismatchError(
        f"{where} is neither a Reward3D nor an ImageReward checkpoint (no blip.*/mlp.* keys; "
        f"first keys: {sample})",
        path,
        unexpected=sample,
    )


def _listed(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f", ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


# ------------------------------------------------------------------------------------ loading
def load_official_checkpoint(
    model: Reward3D,
    path: str | os.PathLike[str],
    allow_imagereward_init: bool = False,
    mmap: bool = False,
) -> LoadReport:
    """Load an official checkpoint into ``model`` strictly, in place.

    Args:
        model: a ``Reward3D`` (plain, before any peft wrapping) whose sizes match the file.
        path: ``Reward3D_Scorer.pt`` (head ``scorer``), ``Reward3D_CrossViewFusion.pt`` (head
            ``cross_view_fusion``) or, with ``allow_imagereward_init``, ``ImageReward.pt``.
        allow_imagereward_init: accept ``ImageReward.pt``, which initialises the backbone and the
            MLP but not the 3D head (left at its init, listed in ``LoadReport.initialised_keys``).
            Off by default so that no head silently stays random.
        mmap: memory-map the file instead of reading it (new-format zip files only).

    Raises:
        CheckpointMismatchError: wrong kind for the model's head, missing/unexpected keys, shape or
            dtype mismatches (all listed, with the file name).
        CheckpointFormatError, FileNotFoundError: see ``read_state_dict``.
    """
    _require_blip(model)
    state = read_state_dict(path, mmap=mmap)
    kind = detect_checkpoint_kind(state, path)
    head = model.head_kind
    if kind == "imagereward" and not allow_imagereward_init:
        raise CheckpointMismatchError(
            f"checkpoint {path} is ImageReward.pt (blip.* + mlp.*, no 3D head): it can only "
            f"initialise the backbone and MLP; the {head} head would stay untrained. Pass "
            "allow_imagereward_init=True to do that deliberately, or load a Reward3D checkpoint.",
            path,
        )
    if kind != "imagereward" and kind != head:
        marker = next(k for k in sorted(state) if k.startswith(_HEAD_RULES[kind][0]))
        raise CheckpointMismatchError(
            f"checkpoint {path} is a Reward3D {kind!r} checkpoint (it has {marker}) but the "
            f"model's head is {head!r}: build Reward3D(head={kind!r}) for this file",
            path,
            unexpected=[marker],
        )

    key_map = official_key_map(model)
    ours = model.state_dict()
    head_prefix = _HEAD_RULES[head][0]
    expected = set(key_map)
    if kind == "imagereward":
        expected = {k for k in expected if not k.startswith(head_prefix)}
    unused_shapes = unused_official_shapes(model)
    present = set(state)
    unused = sorted(present & set(unused_shapes))
    missing = sorted(expected - present - {POSITION_IDS_KEY})
    unexpected = sorted(present - expected - set(unused_shapes))
    mismatched = []
    for key in sorted(present & expected):
        got, want = state[key], ours[key_map[key]]
        if tuple(got.shape) != tuple(want.shape) or (
            got.is_floating_point() != want.is_floating_point()
        ):
            mismatched.append(
                f"{key}: checkpoint {tuple(got.shape)} {got.dtype} vs model "
                f"{tuple(want.shape)} {want.dtype}"
            )
    for key in unused:
        if tuple(state[key].shape) != unused_shapes[key]:
            mismatched.append(
                f"{key}: checkpoint {tuple(state[key].shape)} vs expected {unused_shapes[key]}"
            )
    if missing or unexpected or mismatched:
        message = f"checkpoint {path} ({kind}) does not match Reward3D(head={head!r}):"
        if missing:
            message += _listed("missing keys", missing)
        if unexpected:
            message += _listed("unexpected keys", unexpected)
        if mismatched:
            message += _listed("shape/dtype mismatches", mismatched)
        message += (
            "\nThe model sizes (image_size, widths, depths, vocab) must equal the checkpoint's; "
            "the official files fit the defaults."
        )
        raise CheckpointMismatchError(message, path, missing, unexpected, mismatched)

    loadable = present & expected
    result = model.load_state_dict({key_map[k]: state[k] for k in loadable}, strict=False)
    not_loaded = {key_map[k] for k in set(key_map) - loadable}
    if result.unexpected_keys or set(result.missing_keys) != not_loaded:  # internal invariant
        raise RuntimeError(
            f"key map inconsistency loading {path}: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    defaulted = tuple(sorted({POSITION_IDS_KEY} - present))
    initialised = tuple(sorted(not_loaded - {key_map[k] for k in defaulted}))
    report = LoadReport(str(path), kind, len(loadable), tuple(unused), defaulted, initialised)
    log.info(
        "loaded %s (%s): %d tensors; %d known-unused keys skipped (%s); defaulted %s; "
        "left at init %d",
        path,
        kind,
        report.loaded,
        len(unused),
        ", ".join(unused) or "none",
        list(defaulted) or "nothing",
        len(initialised),
    )
    return report

"""Saving and loading trained Reward3D models: a LoRA adapter in peft's format, or full weights.

An export folder holds ``reward3d.json`` (how to rebuild the model: the LightningCLI-style
``class_path`` / ``init_args`` of :class:`Reward3D` and its backbone, plus notes) and either

- ``adapter/``: ``adapter_config.json`` + ``adapter_model.safetensors`` written by peft's
  ``save_pretrained`` (LoRA matrices, plus the fully trained head and new layers as
  ``modules_to_save``); loaded with ``PeftModel.from_pretrained`` onto the rebuilt base model and
  merged, or
- ``model.safetensors``: the whole state dict (freeze-bottom, head-only or full fine-tuning).

The package ships one such folder, ``dreamreward/assets/reward3d/primitives`` (trained by
``configs/reward3d/primitives.yaml``): :func:`load_reward3d` with no argument loads it.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dreamreward.models.reward3d.model import Reward3D
from dreamreward.models.weight_errors import CheckpointMismatchError, check_state_dict

CONFIG_FILE = "reward3d.json"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # in ADAPTER_DIR; peft's pickled .bin is refused
WEIGHTS_FILE = "model.safetensors"
_ALLOWED_PREFIX = "dreamreward.models.reward3d."


def shipped_reward3d_dir() -> Path:
    """The Reward3D trained on the primitives world that ships with the package."""
    return Path(__file__).resolve().parents[2] / "assets" / "reward3d" / "primitives"


def build_from_config(config: dict[str, Any]) -> nn.Module:
    """Instantiate ``{"class_path", "init_args"}`` recursively (nested dicts with a class_path
    become objects). Only Reward3D classes may be named: an export folder is data, and must not
    make us import arbitrary modules."""
    if not isinstance(config, dict) or "class_path" not in config:
        raise ValueError(f"expected a dict with 'class_path', got {config!r}")
    path = config["class_path"]
    if not isinstance(path, str) or not path.startswith(_ALLOWED_PREFIX):
        raise ValueError(f"refusing to build {path!r}: only {_ALLOWED_PREFIX}* classes are allowed")
    module_name, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name, None)
    except ImportError as err:
        raise ValueError(f"cannot build {path!r}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"refusing to build {path!r}: not a torch module class")
    kwargs = {
        k: build_from_config(v) if isinstance(v, dict) and "class_path" in v else v
        for k, v in config.get("init_args", {}).items()
    }
    return cls(**kwargs)


def _rebuild_base(spec: dict[str, Any], base_checkpoint: str | None) -> Reward3D:
    model = build_from_config(spec)
    if not isinstance(model, Reward3D):
        raise ValueError("the recorded model is not a Reward3D")
    if base_checkpoint is not None:
        from dreamreward.models.reward3d.checkpoint import load_official_checkpoint

        load_official_checkpoint(model, base_checkpoint)
    return model


def _frozen_base_state(peft_model: nn.Module) -> dict[str, Any]:
    """The weights an adapter does not carry, under their plain names: everything except the
    LoRA matrices and the modules it saves whole (both their trained and original copies)."""
    state = {}
    for key, value in peft_model.get_base_model().state_dict().items():
        if ".lora_" in key or "modules_to_save." in key or "original_module." in key:
            continue
        state[key.replace(".base_layer.", ".")] = value
    return state


def base_is_reproducible(peft_model: nn.Module, base_checkpoint: str | None = None) -> bool:
    """Whether rebuilding the base model from its spec (and ``base_checkpoint``) gives exactly
    the weights under the adapter, i.e. whether the adapter alone is a complete export."""
    base = peft_model.get_base_model()
    fresh = _rebuild_base(base.build_spec(), base_checkpoint).state_dict()
    current = _frozen_base_state(peft_model)
    return set(current) <= set(fresh) and all(
        torch.equal(value.cpu(), fresh[key]) for key, value in current.items()
    )


def save_reward3d(
    model: nn.Module,
    folder: str | os.PathLike[str],
    notes: dict[str, Any] | None = None,
    base_checkpoint: str | None = None,
) -> Path:
    """Write an export folder for ``model``: a peft-wrapped Reward3D (adapter) or a plain one.

    An adapter is a complete export only if the base weights under it can be rebuilt exactly
    (pretrained backbone from its package, or ``base_checkpoint``). That is checked: when they
    cannot (e.g. a randomly initialised backbone), the merged model is saved as full weights
    and the adapter beside it for reference.

    Args:
        model: a ``peft.PeftModel`` around a :class:`Reward3D`, or a :class:`Reward3D`.
        folder: output folder (created; existing export files are overwritten).
        notes: extra JSON-serialisable facts to record (training figures, data, ...).
        base_checkpoint: the official checkpoint the base model was initialised from.
    """
    from peft import PeftModel
    from safetensors.torch import save_file

    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    if getattr(inner, "is_frozen_guide", False):
        # a frozen guide's backbone was rewritten for inference (BatchNorm folded into the
        # convolutions): its state dict no longer matches the architecture an export rebuilds
        raise ValueError(
            "save_reward3d: this Reward3D is a frozen guide (as_frozen_guide rewrote it for "
            "inference); save the model before calling as_frozen_guide"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights_model: nn.Module | None = None
    if isinstance(model, PeftModel):
        base = model.get_base_model()
        model.save_pretrained(str(folder / ADAPTER_DIR))
        kind = "lora_adapter"
        if not base_is_reproducible(model, base_checkpoint):
            merged = _rebuild_base(base.build_spec(), None)
            merged.load_state_dict(_merged_state(model), strict=True)
            weights_model, kind = merged, "full_weights"
    elif isinstance(model, Reward3D):
        base, weights_model, kind = model, model, "full_weights"
        shutil.rmtree(folder / ADAPTER_DIR, ignore_errors=True)
    else:
        raise TypeError(f"expected a Reward3D or a PeftModel around one, got {type(model)}")
    if weights_model is not None:
        state = {k: v.detach().contiguous().cpu() for k, v in weights_model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
    else:  # a stale full-weights file from an earlier export must not sit beside the adapter
        (folder / WEIGHTS_FILE).unlink(missing_ok=True)
    record = {
        "format": kind,
        "model": base.build_spec(),
        "base_checkpoint": base_checkpoint,
        "notes": notes or {},
    }
    (folder / CONFIG_FILE).write_text(json.dumps(record, indent=2, default=str))
    return folder


def _merged_state(peft_model: nn.Module) -> dict[str, Any]:
    """The plain Reward3D state dict with the adapter merged, leaving ``peft_model`` intact."""
    import copy

    return copy.deepcopy(peft_model).merge_and_unload().state_dict()


def load_reward3d(
    folder: str | os.PathLike[str] | None = None,
    as_guide: bool = True,
    map_location: str | torch.device = "cpu",
) -> Reward3D:
    """Load an export folder (default: the shipped primitives Reward3D) as a plain Reward3D.

    A LoRA adapter is merged into the base weights (no peft wrapper remains, so scoring costs the
    same as an untuned model). ``as_guide`` returns it frozen in eval mode
    (:meth:`Reward3D.as_frozen_guide`), ready for scoring and DreamFL.

    Raises:
        FileNotFoundError: no ``reward3d.json`` in ``folder``.
        CheckpointMismatchError: weights that do not fit the recorded architecture.
    """
    folder = Path(folder) if folder is not None else shipped_reward3d_dir()
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} not found: not a Reward3D export folder (expected {CONFIG_FILE} and "
            f"{ADAPTER_DIR}/ or {WEIGHTS_FILE})"
        )
    try:
        record = json.loads(config_path.read_text())
        fmt, model_config = record["format"], record["model"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{config_path}: malformed export record ({err})") from err
    try:
        model = _rebuild_base(
            model_config, record.get("base_checkpoint") if fmt == "lora_adapter" else None
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: cannot rebuild the recorded model ({err})") from err
    if fmt == "lora_adapter":
        from peft import PeftModel

        adapter = folder / ADAPTER_DIR
        if not (adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter}: missing adapter_config.json")
        if not (adapter / ADAPTER_WEIGHTS).is_file():
            # peft would fall back to adapter_model.bin, a pickle: refuse rather than unpickle
            found = sorted(p.name for p in adapter.iterdir())
            raise FileNotFoundError(
                f"{adapter}: no {ADAPTER_WEIGHTS} (found {found}); exports are written "
                "as safetensors, and pickled .bin weights are not loaded"
            )
        try:
            peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointMismatchError(
                f"{adapter}: the adapter does not fit the recorded model ({err})", path=adapter
            ) from err
        model = peft_model.merge_and_unload()
    elif fmt == "full_weights":
        from safetensors.torch import load_file

        path = folder / WEIGHTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        state = load_file(str(path))
        check_state_dict(model.state_dict(), state, f"{path} does not fit the recorded model", path)
        model.load_state_dict(state, strict=True)
    else:
        raise ValueError(f"{config_path}: unknown export format {fmt!r}")
    assert isinstance(model, Reward3D)
    model = model.to(map_location)
    return model.as_frozen_guide() if as_guide else model.eval()

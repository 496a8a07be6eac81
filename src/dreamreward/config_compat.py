"""Configs of the previous release, read for one more: names that moved.

- Before the typed groups (:mod:`dreamreward.modules.two_stage_settings`), DreamFL and mesh
  reconstruction took their learning rates, mesh-stage and export settings as flat arguments
  (``model.init_args.lr_grid``, ``--model.init_args.turntable_frames 60``); they now live in
  groups (``model.init_args.optimization.lr_grid``).
- DreamFL's reward term named its judge ``reward`` (``model.init_args.reward.init_args.reward``,
  a reward inside the reward); it is ``judge`` now, as in the ranker.

A config file or flag that still uses an old name is rewritten to the new one with a warning
naming the file or flag, instead of failing to parse: saved ``config.yaml`` files of older runs
still resume. Only models that are two-stage asset modules are touched (their ``class_path`` is
imported to check).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

import yaml

from dreamreward.modules.two_stage_settings import MOVED_ARGUMENTS, group_legacy_hparams

_CONFIG_FLAGS = ("--config", "-c")


def translate_legacy_args(args: list[str]) -> list[str]:
    """``args`` (a Lightning subcommand's command line) with pre-group names moved.

    Config files that need no change are passed on as their paths; one that does is passed on
    as its translated YAML text (``--config`` takes either). Flags
    ``--model[.init_args].<flat>[=value]`` are renamed when the model in force by then is a
    two-stage asset module.
    """
    out: list[str] = []
    model_is_asset: bool | None = None  # unknown until a config or --model names a class
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if name in _CONFIG_FLAGS:
            value = inline if eq else (args[i + 1] if i + 1 < len(args) else None)
            if value is not None:
                translated, found = _translate_config(value, model_is_asset)
                model_is_asset = found if found is not None else model_is_asset
                out += [name, translated]
                i += 1 if eq else 2
                continue
        if name == "--model" and not eq and i + 1 < len(args):
            model_is_asset = _is_asset_class(args[i + 1])
        elif name == "--model" and eq:
            model_is_asset = _is_asset_class(inline)
        judge_flag = _old_judge_flag(name)
        if judge_flag is not None and model_is_asset is not False:
            _warn(f"{name} is now {judge_flag}")
            arg = f"{judge_flag}={inline}" if eq else judge_flag
        flat = _flat_model_flag(name)
        if flat is not None and model_is_asset is not False:
            group, field = MOVED_ARGUMENTS[flat]
            prefix = "--model.init_args." if name.startswith("--model.init_args.") else "--model."
            new = f"{prefix}{group}.{field}"
            _warn(f"{name} is now {new}")
            arg = f"{new}={inline}" if eq else new
        out.append(arg)
        i += 1
    return out


def _flat_model_flag(name: str) -> str | None:
    for prefix in ("--model.init_args.", "--model."):
        if name.startswith(prefix) and name[len(prefix) :] in MOVED_ARGUMENTS:
            return name[len(prefix) :]
    return None


_OLD_JUDGE = (".reward.init_args.reward", ".reward.init_args.judge")


def _old_judge_flag(name: str) -> str | None:
    """``--model[.init_args].reward.init_args.reward[...]`` as its ``judge`` spelling."""
    for prefix in ("--model.init_args", "--model"):
        old = prefix + _OLD_JUDGE[0]
        if name == old or name.startswith(old + "."):
            return prefix + _OLD_JUDGE[1] + name[len(old) :]
    return None


def _rename_judge(init_args: dict[str, Any]) -> bool:
    """Rename the reward term's ``reward`` (its judge) to ``judge`` in a DreamFL model's
    ``init_args``, in place, unless the term is another class that may mean something else."""
    term = init_args.get("reward")
    if not isinstance(term, dict) or not isinstance(term.get("init_args"), dict):
        return False
    class_path = term.get("class_path")
    if class_path is not None and not str(class_path).endswith("RewardGuidance"):
        return False
    args = term["init_args"]
    if "reward" not in args:
        return False
    args.setdefault("judge", args.pop("reward"))
    return True


def _translate_config(value: str, model_is_asset: bool | None) -> tuple[str, bool | None]:
    """(the config to pass on, whether its model is a two-stage asset module or None when it
    names no model class); ``model_is_asset``: what the configs before it said (an overlay
    names no class)."""
    path = Path(value)
    if not path.is_file():
        return value, None  # inline YAML or a missing file: jsonargparse reports it as before
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return value, None  # jsonargparse names the file and the problem
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return value, None
    class_path = model.get("class_path")
    is_asset = _is_asset_class(class_path) if isinstance(class_path, str) else None
    init_args = model.get("init_args", model)
    asset_model = is_asset if class_path is not None else model_is_asset  # overlays name none
    if asset_model is False or not isinstance(init_args, dict):
        return value, is_asset
    moved = [
        f"{flat} -> {'.'.join(MOVED_ARGUMENTS[flat])}" for flat in group_legacy_hparams(init_args)
    ]
    if _rename_judge(init_args):
        moved.append("reward.init_args.reward -> reward.init_args.judge")
    if not moved:
        return value, is_asset
    where = ", ".join(moved)
    _warn(f"{path}: model settings moved ({where}); update the file")
    return yaml.safe_dump(config, sort_keys=False), is_asset


def _is_asset_class(class_path: Any) -> bool | None:
    """Whether ``class_path`` names a two-stage asset module (None: cannot tell)."""
    from dreamreward.modules.two_stage import TwoStageAssetModule

    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return None
    return isinstance(cls, type) and issubclass(cls, TwoStageAssetModule)


def _warn(message: str) -> None:
    warnings.warn(
        f"{message} (the flat names are read for this release only)", FutureWarning, stacklevel=3
    )

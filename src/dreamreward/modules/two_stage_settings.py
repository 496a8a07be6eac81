"""Typed argument groups of the two-stage asset modules (DreamFL and mesh reconstruction).

Both LightningModules optimise the same NeRF -> DMTet asset and share three groups of settings:
how it is optimised (:class:`AssetOptimization`), how its mesh stage starts, renders and is
regularised (:class:`MeshStage`), and what is written at the end (:class:`AssetExport`). Each is
a frozen dataclass that checks its own values; LightningCLI reads them as nested groups::

    model:
      init_args:
        optimization: {lr_grid: 1.0e-2}
        mesh_stage: {isosurface_threshold: 5.0, supersample: 2}
        export: {turntable_frames: 60}

(``--model.init_args.mesh_stage.isosurface_threshold 5`` on the command line). A module's
default for a group is an instance with that module's values, so unset fields keep them.

Checkpoints store the groups as plain dicts (``weights_only`` loading and ``hparams.yaml`` stay
free of custom classes); :func:`settings_group` turns such a dict back into the group. Configs and
checkpoints from before the groups used flat names (``model.init_args.lr_grid``);
:data:`MOVED_ARGUMENTS` maps each to its new place, and :func:`group_legacy_hparams` /
``lightning_cli``'s config translation read them for one release.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from dreamreward.render.export import MESH_SUFFIXES


def _finite(owner: str, name: str, value: Any, low: float | None, strict: bool) -> list[str]:
    """The problem with one numeric field, if any (``low``: its bound, ``strict``: ``>``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok:
        return []
    bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
    return [f"{owner}.{name} must be a finite number{bound}, got {value!r}"]


def _positive_int(owner: str, name: str, value: Any) -> list[str]:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return [] if ok else [f"{owner}.{name} must be an integer >= 1, got {value!r}"]


def _raise(group: str, problems: list[str]) -> None:
    if problems:
        raise ValueError(f"{group}: " + "; ".join(problems))


@dataclass(frozen=True)
class AssetOptimization:
    """Adam learning rates of the asset's parameter groups (Instant-NGP / threestudio settings).

    Args:
        lr_grid: the hash-grid encoding of the NeRF field.
        lr_mlp: the field's MLPs and a learned background.
        lr_dmtet: DMTet's SDF and vertex offsets (stage 2).
    """

    lr_grid: float = 1e-2
    lr_mlp: float = 1e-3
    lr_dmtet: float = 1e-3

    def __post_init__(self) -> None:
        owner = "model.optimization"
        problems = []
        for name in ("lr_grid", "lr_mlp", "lr_dmtet"):
            problems += _finite(owner, name, getattr(self, name), 0.0, strict=True)
        _raise(type(self).__name__, problems)


@dataclass(frozen=True)
class MeshStage:
    """How the NeRF becomes a mesh and how the mesh stage renders and is regularised.

    Args:
        isosurface_threshold: the field's density level that becomes the DMTet surface
            (Magic3D's ``create_from``).
        supersample: stage-2 renders are rasterized at this multiple of the target size and box
            filtered (antialiased like the volume renders).
        soft_sigma: the soft silhouette's falloff in squared output pixels (SoftRas's sigma).
        normal_consistency_weight: weight of the normal-consistency regulariser.
        laplacian_weight: weight of Laplacian smoothing.
    """

    isosurface_threshold: float = 10.0
    supersample: int = 2
    soft_sigma: float = 1.0
    normal_consistency_weight: float = 0.1
    laplacian_weight: float = 0.0

    def __post_init__(self) -> None:
        owner = "model.mesh_stage"
        problems = _finite(owner, "isosurface_threshold", self.isosurface_threshold, None, False)
        problems += _positive_int(owner, "supersample", self.supersample)
        problems += _finite(owner, "soft_sigma", self.soft_sigma, 0.0, strict=True)
        for name in ("normal_consistency_weight", "laplacian_weight"):
            problems += _finite(owner, name, getattr(self, name), 0.0, strict=False)
        _raise(type(self).__name__, problems)


@dataclass(frozen=True)
class AssetExport:
    """The files written at the end of a fit: the mesh and a turntable GIF.

    Args:
        formats: mesh files to write (``glb``, ``obj``).
        turntable_frames: frames of the turntable GIF.
        turntable_size: its side in pixels.
        turntable_elevation_deg, turntable_distance, turntable_fovy_deg: its orbit camera.
    """

    formats: tuple[str, ...] = ("glb", "obj")
    turntable_frames: int = 24
    turntable_size: int = 128
    turntable_elevation_deg: float = 15.0
    turntable_distance: float = 2.2
    turntable_fovy_deg: float = 45.0

    def __post_init__(self) -> None:
        owner = "model.export"
        # a list from YAML or a checkpoint's dict becomes the tuple the type says
        object.__setattr__(self, "formats", tuple(self.formats))
        supported = [suffix.lstrip(".") for suffix in MESH_SUFFIXES]
        unknown = [f for f in self.formats if f not in supported]
        problems = [f"{owner}.formats has {unknown}; supported: {supported}"] if unknown else []
        problems += _positive_int(owner, "turntable_frames", self.turntable_frames)
        problems += _positive_int(owner, "turntable_size", self.turntable_size)
        problems += _finite(
            owner, "turntable_elevation_deg", self.turntable_elevation_deg, None, False
        )
        problems += _finite(owner, "turntable_distance", self.turntable_distance, 0.0, strict=True)
        problems += _finite(owner, "turntable_fovy_deg", self.turntable_fovy_deg, 0.0, strict=True)
        _raise(type(self).__name__, problems)


Group = TypeVar("Group", AssetOptimization, MeshStage, AssetExport)


def settings_group(cls: type[Group], value: Group | Mapping[str, Any], argument: str) -> Group:
    """``value`` as a ``cls``: an instance as it is, a mapping (a checkpoint's saved dict, a
    Python caller's dict) field by field.

    Raises:
        TypeError: neither, or a mapping with fields ``cls`` does not have (named, with
            ``argument``, the constructor argument, for the message).
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise TypeError(
                f"model.{argument}: unknown field(s) {unknown}; {cls.__name__} has {sorted(known)}"
            )
        return cls(**value)
    raise TypeError(
        f"model.{argument} must be a {cls.__name__} (or a mapping of its fields), "
        f"got {type(value).__name__}"
    )


def group_as_hparams(group: AssetOptimization | MeshStage | AssetExport) -> dict[str, Any]:
    """A group as the plain dict checkpoints and ``hparams.yaml`` store (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(group).items()}


# Flat constructor arguments of the modules before the groups -> their place now (one release).
MOVED_ARGUMENTS: dict[str, tuple[str, str]] = {
    "lr_grid": ("optimization", "lr_grid"),
    "lr_mlp": ("optimization", "lr_mlp"),
    "lr_dmtet": ("optimization", "lr_dmtet"),
    "isosurface_threshold": ("mesh_stage", "isosurface_threshold"),
    "mesh_supersample": ("mesh_stage", "supersample"),
    "soft_sigma": ("mesh_stage", "soft_sigma"),
    "normal_consistency_weight": ("mesh_stage", "normal_consistency_weight"),
    "laplacian_weight": ("mesh_stage", "laplacian_weight"),
    "export_formats": ("export", "formats"),
    "turntable_frames": ("export", "turntable_frames"),
    "turntable_size": ("export", "turntable_size"),
    "turntable_elevation_deg": ("export", "turntable_elevation_deg"),
    "turntable_distance": ("export", "turntable_distance"),
    "turntable_fovy_deg": ("export", "turntable_fovy_deg"),
}


def group_legacy_hparams(hparams: dict[str, Any]) -> list[str]:
    """Move flat pre-group settings in ``hparams`` (a checkpoint's ``hyper_parameters`` or a
    config's ``init_args``) into their groups, in place; returns the names moved. A value
    already in its group wins over a flat one."""
    moved = []
    for flat, (group, field) in MOVED_ARGUMENTS.items():
        if flat not in hparams:
            continue
        value = hparams.pop(flat)
        target = hparams.get(group)
        target = dict(target) if isinstance(target, Mapping) else {}
        target.setdefault(field, value)
        hparams[group] = target
        moved.append(flat)
    return moved

"""Generated assets blended towards the truth: pairs that teach Reward3D which way is better.

    python -m dreamreward build-blends --generated data/generated_train --out data/blends_train

A reward that only ranks finished assets can rank them right and still have a gradient that
points anywhere: nothing in "this sample is better than that one" says which small change of
the pixels would make a sample better. DreamFL follows that gradient from the prior's own
samples, which mostly miss or mix up an object. This set adds, for each sample of a generated
set (``build-generated``), the same views mixed a fraction ``alpha`` of the way towards the
prompt's ground-truth scene seen from the same cameras::

    blend(alpha) = (1 - alpha) * sample + alpha * truth        (per pixel, every view)

and ranks them by ``alpha`` (more of the truth is better). Every pair then says "moving from
this sample towards the right asset raises the score", at and near the points DreamFL starts
from: the directional derivative a useful reward gradient needs. The blends are 3D-consistent
(both endpoints are renders of one asset from the same cameras), so they stay a set of views of
something, if a ghostly one.

Samples the oracle already scores well (``max_oracle``) are left out: their blends differ from
them by a shade, and asking the reward to order near-identical images teaches it the world
renderer's exact pixels, not what is in the picture.

Rows follow the preference schema; per prompt: the truth once (rank 1, ``alpha`` = 1), then each
sample at every ``alpha`` in ``alphas`` below 1, ranked by ``alpha`` (equal ``alpha`` ties, so
no pair compares two samples blended equally). ``defect`` is ``blend/<alpha>`` (``blend/truth``
for the truth), so accuracy is reported per blend level; ratings scale with ``alpha``. Use only
on training prompts' generated sets (it reads the ground truth: a set built from held-out prompts
would leak their answers into training).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm

from dreamreward.data.build_primitives import _png
from dreamreward.data.preference import load_preference_dataset
from dreamreward.data.schema import (
    cameras_to_tensor,
    check_new_output,
    save_preference_rows,
    views_to_tensor,
)
from dreamreward.render.cameras import Cameras
from dreamreward.world.scene import Scene
from dreamreward.world.views import ground_truth_views

TRUTH = 1.0


def blend_label(alpha: float) -> str:
    """``blend/<alpha>`` (``blend/truth`` at 1): the ``defect`` of a blended asset."""
    return "blend/truth" if alpha == TRUTH else f"blend/{alpha:g}"


def row_views(row: dict[str, Any]) -> torch.Tensor:
    """A row's stored views -> (V, H, W, 3) float in [0, 1]."""
    return views_to_tensor(row["views"]).permute(0, 2, 3, 1)


def row_cameras(row: dict[str, Any], width: int, height: int) -> Cameras:
    """The cameras a row's views were rendered from (its ``cameras`` and ``fovy_deg``)."""
    fovy = torch.deg2rad(torch.tensor(row["fovy_deg"], dtype=torch.float32))
    return Cameras(c2w=cameras_to_tensor(row["cameras"]), fovy=fovy, width=width, height=height)


def _ratings(alpha: float) -> dict[str, float]:
    level = int(round(1 + 5 * alpha))
    return {"alignment": level, "fidelity": level, "consistency": level, "overall": float(level)}


def blend_prompt_rows(rows: Sequence[dict[str, Any]], alphas: Sequence[float]) -> list[dict]:
    """The blended rows of one prompt's generated rows (see the module docstring).

    Raises:
        ValueError: a row without a ground-truth scene or cameras, or rows of one prompt with
            different scenes.
    """
    first = rows[0]
    if not first["scene"]:
        raise ValueError(
            f"asset {first['asset_id']!r}: no ground-truth scene (blends need primitives prompts)"
        )
    if any(r["scene"] != first["scene"] for r in rows):
        raise ValueError(f"prompt {first['prompt_id']!r}: its rows give different scenes")
    scene = Scene.from_dict(json.loads(first["scene"]))
    levels = sorted({float(a) for a in alphas if a < TRUTH}, reverse=True)
    rank_of = {a: i + 2 for i, a in enumerate(levels)}  # the truth is rank 1
    truths: dict[str, torch.Tensor] = {}
    out: list[dict] = []
    for row in rows:
        views = row_views(row)  # (V, H, W, 3)
        if not row["cameras"] or len(row["cameras"]) != len(views):
            raise ValueError(
                f"asset {row['asset_id']!r}: {len(views)} views need as many cameras, got "
                f"{len(row['cameras'] or [])}"
            )
        key = json.dumps([row["cameras"], row["fovy_deg"], list(views.shape)])
        if key not in truths:
            cameras = row_cameras(row, width=views.shape[2], height=views.shape[1])
            truths[key] = ground_truth_views(scene, cameras).clamp(0, 1)  # (V, H, W, 3)
            # named after the sample it was first rendered for: unique across blend sets made
            # from different sources of one prompt (each source's asset ids are)
            out.append(_blend_row(row, truths[key], TRUTH, 1, f"{row['asset_id']}-truth"))
        truth = truths[key]
        for alpha in levels:
            blended = (1 - alpha) * views + alpha * truth
            asset_id = f"{row['asset_id']}-blend{alpha:g}"
            out.append(_blend_row(row, blended, alpha, rank_of[alpha], asset_id))
    return out


def _blend_row(
    row: dict[str, Any], views: torch.Tensor, alpha: float, rank: int, asset_id: str
) -> dict[str, Any]:
    return {
        "prompt_id": row["prompt_id"],
        "prompt": row["prompt"],
        "asset_id": asset_id,
        "views": [_png(v) for v in views],
        "cameras": row["cameras"],
        "fovy_deg": row["fovy_deg"],
        "ratings": _ratings(alpha),
        "rank": rank,
        "defect": blend_label(alpha),
        "scene": row["scene"],
        "composition": row["composition"],
    }


def _oracle_scores(generated: Path) -> dict[str, float]:
    info = generated / "build_info.json"
    if not info.exists():
        raise FileNotFoundError(
            f"{info}: missing (it holds the oracle scores max_oracle needs); pass "
            "--max_oracle null to blend every sample"
        )
    return {k: float(v) for k, v in json.loads(info.read_text())["oracle_by_asset"].items()}


def build_blends(
    generated: str,
    out: str,
    alphas: Sequence[float] = (0.0, 0.5),
    max_oracle: float | None = 0.5,
    progress: bool = True,
) -> datasets.Dataset:
    """Blend every sample of a generated set towards its prompt's truth (module docstring).

    Args:
        generated: a preference set of generated assets of *training* prompts
            (``build-generated --splits '[train]'``), with scenes and cameras.
        out: output folder (``datasets`` ``save_to_disk``); must not exist or be empty.
        alphas: the blend levels below 1 to add per sample (0 = the sample itself, so that pairs
            compare it with its blends too); the truth (1) is always added, once per prompt and
            camera set.
        max_oracle: blend only samples whose oracle score (the generated set's
            ``build_info.json``) is below this; None blends every sample.
        progress: show a progress bar.
    """
    if not alphas or any(not 0.0 <= a < TRUTH for a in alphas):
        raise ValueError(f"alphas must be a non-empty list of numbers in [0, 1), got {alphas}")
    out_path = check_new_output(out)
    if not Path(generated).exists():
        raise FileNotFoundError(f"{generated}: no generated set there (run build-generated)")
    source = load_preference_dataset(generated)  # a folder that is no dataset: an error naming it
    meta = source.select_columns(["prompt_id", "asset_id"])[:]
    oracle = _oracle_scores(Path(generated)) if max_oracle is not None else {}
    groups: dict[str, list[int]] = {}
    skipped = 0
    ids = zip(meta["prompt_id"], meta["asset_id"], strict=True)
    for index, (prompt_id, asset_id) in enumerate(ids):
        if max_oracle is not None:
            if asset_id not in oracle:
                raise ValueError(
                    f"{generated}: build_info.json has no oracle score for {asset_id!r}"
                )
            if oracle[asset_id] >= max_oracle:
                skipped += 1
                continue
        groups.setdefault(prompt_id, []).append(index)
    rows: list[dict] = []
    for prompt_id in tqdm(groups, desc="prompts", disable=not progress, unit="prompt"):
        members = [source[i] for i in groups[prompt_id]]
        try:
            rows.extend(blend_prompt_rows(members, alphas))
        except ValueError as error:
            raise ValueError(f"{generated}: {error}") from error
    if not rows:
        raise ValueError(f"{generated}: every sample scores >= max_oracle={max_oracle}: no blends")
    info = {
        "generated": str(generated),
        "alphas": [float(a) for a in alphas],
        "max_oracle": max_oracle,
        "samples_left_out": skipped,
        "prompts": len(groups),
        "assets": len(rows),
    }
    return save_preference_rows(rows, out_path, info)

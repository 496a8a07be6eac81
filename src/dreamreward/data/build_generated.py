"""Generated assets ranked by the oracle: what DreamFL will show Reward3D, in the schema.

    python -m dreamreward build-generated --out data/generated_test --splits '[test, novel]'

The primitives set's candidates are procedural (the right scene, or one defect applied to it);
the assets a reward meets inside DreamFL are samples of the multi-view prior and partly
optimised NeRFs, with their own failures (soft edges, wrong sizes, mixed colours, half-formed
objects). As 3DRewardDB was made from the generator's own assets ranked by experts, this set is
made from the shipped prior's samples ranked by the oracle, for the prompts of chosen splits of a
primitives preference set (so held-out prompts stay held out: build ``test``/``novel`` to
evaluate on, ``train`` to train on).

Per prompt: ``seeds`` samples at each of ``guidance_scales`` (DDIM, the prior's canonical
cameras), each judged by :func:`~dreamreward.world.oracle.oracle_score` against the prompt's
ground-truth scene (a degenerate sample scores 0). Rows follow the preference schema:

- ``rank``: dense rank of the oracle score in steps of :data:`RANK_STEP` (scores closer than
  that are a tie: no pair is formed from a difference the oracle's own tolerance blurs);
- ``ratings``: ``alignment`` = 1 + 5 x the oracle score, ``consistency`` = 1 + 5 x the views'
  consistency, ``fidelity`` = the mean of the two (the oracle has no separate fidelity axis),
  ``overall`` their mean (rounded to the 1-6 scale);
- ``defect``: ``generated/<source>``, e.g. ``generated/prior_cfg3`` (the candidate's source, so
  the evaluation tables report accuracy per source); ``scene``, ``composition``, ``prompt_id``
  and ``prompt`` are the source prompt's.

Incremental and resumable: each prompt's rows are written to ``<out>.parts/<prompt_id>.json``
as soon as they are made, a rerun skips the prompts already there, and the set is assembled at
the end. Deterministic: a sample's noise is seeded by its prompt, guidance scale and seed.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from collections.abc import Sequence
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm

from dreamreward.data.build_primitives import _png
from dreamreward.data.preference import PreferenceDataModule
from dreamreward.data.schema import PREFERENCE_FEATURES, check_new_output
from dreamreward.models.mvdiffusion.camera_embedding import mvdream_camera_embedding
from dreamreward.world.oracle import oracle_score, view_consistency
from dreamreward.world.scene import Scene
from dreamreward.world.views import default_cameras

RANK_STEP = 0.05
"""Oracle scores that fall in the same step of this width share a rank (a tie)."""


def source_name(guidance_scale: float) -> str:
    """``prior_cfg<g>``: the source label of a prior sample at guidance ``g``."""
    return f"prior_cfg{guidance_scale:g}"


def _rating(score: float) -> int:
    return int(min(6, max(1, round(1 + 5 * score))))


def oracle_ratings(score: float, consistency: float) -> dict[str, float]:
    """The rating axes of a generated asset from its oracle score and its views' consistency
    (both in [0, 1]; the oracle has no fidelity axis of its own: the mean of the two)."""
    alignment, consistent = _rating(score), _rating(consistency)
    fidelity = _rating((score + consistency) / 2)
    return {
        "alignment": alignment,
        "fidelity": fidelity,
        "consistency": consistent,
        "overall": (alignment + fidelity + consistent) / 3,
    }


def _ranks(scores: Sequence[float]) -> list[int]:
    """Dense ranks (1 = best) of the scores bucketed by :data:`RANK_STEP`."""
    buckets = [math.floor(s / RANK_STEP + 1e-9) for s in scores]
    order = sorted(set(buckets), reverse=True)
    return [order.index(b) + 1 for b in buckets]


def prompts_of_splits(
    preference_set: str,
    splits: Sequence[str],
    val_fraction: float = 0.05,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> list[dict[str, str]]:
    """The prompts of ``splits`` of a primitives preference set, split exactly as
    :class:`PreferenceDataModule` splits it with the same arguments: dicts with ``prompt_id``,
    ``prompt``, ``scene`` (JSON) and ``composition``, in prompt-id order.

    Raises:
        ValueError: an unknown split, or a prompt without a ground-truth scene.
    """
    data = PreferenceDataModule(
        preference_set, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    data.setup()
    unknown = [s for s in splits if s not in data.split_prompt_ids]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; choose from {sorted(data.split_prompt_ids)}")
    wanted = {p for s in splits for p in data.split_prompt_ids[s]}
    assert data.dataset is not None
    meta = data.dataset.select_columns(["prompt_id", "prompt", "scene", "composition"])[:]
    out: dict[str, dict[str, str]] = {}
    for i, prompt_id in enumerate(meta["prompt_id"]):
        if prompt_id not in wanted or prompt_id in out:
            continue
        if not meta["scene"][i]:
            raise ValueError(
                f"{preference_set}: row {i} (prompt_id {prompt_id!r}) has no ground-truth "
                "scene: generated assets can only be ranked for primitives prompts"
            )
        out[prompt_id] = {
            "prompt_id": prompt_id,
            "prompt": meta["prompt"][i],
            "scene": meta["scene"][i],
            "composition": meta["composition"][i],
        }
    return [out[p] for p in sorted(out)]


def generate_prompt_rows(
    prior: Any,
    prompt: dict[str, str],
    seeds: int,
    guidance_scales: Sequence[float],
    steps: int,
) -> list[dict[str, Any]]:
    """The rows of one prompt: ``seeds`` prior samples per guidance scale, oracle-ranked."""
    scene = Scene.from_dict(json.loads(prompt["scene"]))
    cameras = default_cameras(prior.image_size)
    embedding = mvdream_camera_embedding(cameras)
    candidates = []
    for g in guidance_scales:
        generators = [
            torch.Generator().manual_seed(zlib.crc32(f"{prompt['prompt_id']}/{g:g}/{s}".encode()))
            for s in range(seeds)
        ]
        images = prior.sample(
            [prompt["prompt"]] * seeds,
            embedding.repeat(seeds, 1),
            num_inference_steps=steps,
            guidance_scale=g,
            generator=generators,
        )  # (seeds*V, 3, H, W)
        views = images.permute(0, 2, 3, 1).reshape(seeds, prior.num_views, *images.shape[-2:], 3)
        for s, asset in enumerate(views):
            judged = oracle_score(asset, scene, cameras)
            score = 0.0 if judged.degenerate else judged.total
            consistency = view_consistency(asset)
            candidates.append((g, s, asset, score, consistency))
    ranks = _ranks([c[3] for c in candidates])
    c2w = cameras.c2w.reshape(len(cameras), 16).tolist()
    fovy = torch.rad2deg(cameras.fovy).tolist()
    rows = []
    for (g, s, asset, score, consistency), rank in zip(candidates, ranks, strict=True):
        rows.append(
            {
                "prompt_id": prompt["prompt_id"],
                "prompt": prompt["prompt"],
                "asset_id": f"{prompt['prompt_id']}-{source_name(g)}-s{s}",
                "views": [
                    base64.b64encode(_png(v)["bytes"]).decode("ascii")  # type: ignore[arg-type]
                    for v in asset
                ],
                "cameras": c2w,
                "fovy_deg": fovy,
                "ratings": oracle_ratings(score, consistency),
                "rank": rank,
                "defect": f"generated/{source_name(g)}",
                "scene": prompt["scene"],
                "composition": prompt["composition"],
                "oracle": round(score, 6),
            }
        )
    return rows


def build_generated(
    out: str,
    preference_set: str = "data/primitives_1k",
    splits: Sequence[str] = ("test", "novel"),
    prior: str | None = None,
    seeds: int = 3,
    guidance_scales: Sequence[float] = (1.0, 3.0),
    steps: int = 50,
    max_prompts: int | None = None,
    val_fraction: float = 0.05,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    progress: bool = True,
) -> datasets.Dataset:
    """Sample, judge and save the generated set (see the module docstring).

    Args:
        out: output folder (``datasets`` ``save_to_disk``); must not exist or be empty. Work in
            progress lives in ``<out>.parts`` (rerun the same command to resume).
        preference_set: the primitives preference set whose prompts (and split) to use.
        splits: which of its splits (``train``, ``val``, ``test``, ``novel``).
        prior: a saved multi-view prior folder (default: the shipped one).
        seeds: samples per prompt and guidance scale.
        guidance_scales: classifier-free guidance weights (1 is the shipped prior's best; higher
            gives more saturated, more often wrong samples: both occur inside DreamFL).
        steps: DDIM steps.
        max_prompts: use only the first N prompts of the splits (by prompt id).
        val_fraction, test_fraction, split_seed: the preference set's split (as in its config).
        progress: show a progress bar.
    """
    from dreamreward.models.mvdiffusion.prior import load_prior

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if not guidance_scales:
        raise ValueError("guidance_scales is empty")
    out_path = check_new_output(out)
    prompts = prompts_of_splits(preference_set, splits, val_fraction, test_fraction, split_seed)
    prompts = prompts[:max_prompts] if max_prompts is not None else prompts
    if not prompts:
        raise ValueError(f"no prompts in splits {list(splits)} of {preference_set}")
    parts = out_path.with_name(out_path.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    settings = {
        "preference_set": str(preference_set),
        "splits": list(splits),
        "prior": prior,
        "seeds": seeds,
        "guidance_scales": [float(g) for g in guidance_scales],
        "steps": steps,
        "split": [val_fraction, test_fraction, split_seed],
    }
    settings_file = parts / "settings.json"
    if settings_file.exists() and json.loads(settings_file.read_text()) != settings:
        raise ValueError(
            f"{parts} holds parts made with other settings ({settings_file}); use another --out "
            "or delete it"
        )
    settings_file.write_text(json.dumps(settings, indent=2))
    model = load_prior(prior)
    todo = [p for p in prompts if not (parts / f"{p['prompt_id']}.json").exists()]
    bar = tqdm(todo, desc="prompts", disable=not progress, unit="prompt")
    with torch.no_grad():
        for prompt in bar:
            rows = generate_prompt_rows(model, prompt, seeds, guidance_scales, steps)
            part = parts / f"{prompt['prompt_id']}.json"
            tmp = part.with_suffix(".tmp")
            tmp.write_text(json.dumps(rows))
            tmp.replace(part)  # atomic: an interrupted prompt is redone, never half-read
    rows = [r for p in prompts for r in json.loads((parts / f"{p['prompt_id']}.json").read_text())]
    oracle = [r.pop("oracle") for r in rows]
    for r in rows:
        r["views"] = [{"bytes": base64.b64decode(v), "path": None} for v in r["views"]]
    columns = {name: [r[name] for r in rows] for name in PREFERENCE_FEATURES}
    dataset = datasets.Dataset.from_dict(columns, features=PREFERENCE_FEATURES)
    dataset.save_to_disk(str(out_path))
    info = {
        **settings,
        "prompts": len(prompts),
        "assets": len(rows),
        "oracle_mean": round(sum(oracle) / len(oracle), 4),
        "oracle_by_asset": dict(zip((r["asset_id"] for r in rows), oracle, strict=True)),
    }
    (out_path / "build_info.json").write_text(json.dumps(info, indent=2))
    return datasets.load_from_disk(str(out_path))

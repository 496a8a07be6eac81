"""DreamFL / SDS runs of training prompts as a generated preference set: the assets the reward
meets inside DreamFL, ranked by the oracle.

    python -m dreamreward evaluate-dreamfl --prompts <training prompts> --out runs/train_assets ...
    python -m dreamreward build-from-runs --runs runs/train_assets --out data/runs_train

``build-generated`` samples the prior; but the assets DreamFL optimises look otherwise (64 px
renders of a NeRF or mesh: soft, lower-contrast, often one blob where two objects belong). This
command turns finished runs of ``evaluate-dreamfl`` (any methods; each run's folder holds the
4 canonical views it was scored on, ``eval_views.png``, and ``result.json`` with its prompt,
method and oracle score) into rows of the preference schema, the candidate source recorded as
``defect = generated/<method>``, ranked per prompt by the oracle exactly as ``build-generated``
ranks (:func:`~dreamreward.data.build_generated._ranks`). ``build-blends`` then adds the same
views blended towards the truth.

Each run's prompt is matched to the preference set by its scene (the evaluation uses the
canonical wording, the set its own paraphrase), and the rows take the set's ``prompt_id`` and
prompt text, so the result joins the set as an ``extra_sets`` entry. Only prompts of ``splits``
are accepted: a run of a held-out prompt is an error, not a silent leak into training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from dreamreward.data.build_generated import _ranks, oracle_ratings, prompts_of_splits
from dreamreward.data.build_primitives import _png
from dreamreward.data.schema import cameras_to_list, check_new_output, save_preference_rows
from dreamreward.render.export import read_scored_views
from dreamreward.world.oracle import view_consistency
from dreamreward.world.prompts import describe, parse_prompt
from dreamreward.world.scene import Scene
from dreamreward.world.views import default_cameras


def _scene_key(scene: Scene) -> str:
    """What identifies a prompt's scene across wordings: its canonical description."""
    return describe(scene)


def find_runs(runs: str) -> list[Path]:
    """Run folders under ``runs`` (``<method>/<prompt slug>/seed<k>/`` with ``result.json``),
    sorted."""
    return sorted(p.parent for p in Path(runs).glob("*/*/seed*/result.json"))


def build_from_runs(
    runs: str,
    out: str,
    preference_set: str = "data/primitives_1k",
    splits: Sequence[str] = ("train",),
    exclude: Sequence[str] = ("configs/dreamfl/eval_prompts.txt",),
    val_fraction: float = 0.05,
    test_fraction: float = 0.1,
    split_seed: int = 0,
) -> datasets.Dataset:
    """Collect the finished runs under ``runs`` into a ranked preference set (module docstring).

    Args:
        runs: an ``evaluate-dreamfl`` output folder.
        out: output folder (``datasets`` ``save_to_disk``); must not exist or be empty.
        preference_set: the primitives preference set whose prompts (and split) the runs use.
        splits: the splits the runs' prompts must come from (``train`` for a training set).
        exclude: prompt files (one prompt per line, ``#`` comments) whose prompts must not be
            among the runs': DreamFL's evaluation prompts include training-split prompts, and
            training Reward3D on their assets would leak DreamFL's test into the judge.
        val_fraction, test_fraction, split_seed: the preference set's split (as in its config).

    Raises:
        ValueError: no finished runs, a run's prompt outside ``splits`` or not a primitives
            prompt, or a run without an oracle score.
    """
    out_path = check_new_output(out)
    folders = find_runs(runs)
    if not folders:
        raise ValueError(f"{runs}: no finished runs (<method>/<prompt>/seed<k>/result.json)")
    prompts = prompts_of_splits(preference_set, splits, val_fraction, test_fraction, split_seed)
    by_scene = {_scene_key(Scene.from_dict(json.loads(p["scene"]))): p for p in prompts}
    excluded = {
        _scene_key(parse_prompt(line.strip())): name
        for name in exclude
        for line in Path(name).read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    groups: dict[str, list[dict[str, Any]]] = {}
    configs: dict[str, list[str]] = {}  # what each method's runs were made with, for the record
    for folder in folders:
        result = json.loads((folder / "result.json").read_text())
        where = f"{folder / 'result.json'}"
        try:
            key = _scene_key(parse_prompt(result["prompt"]))
        except ValueError as error:
            raise ValueError(f"{where}: not a primitives prompt ({error})") from error
        if key in excluded:
            raise ValueError(
                f"{where}: prompt {result['prompt']!r} is one of {excluded[key]}'s (excluded: "
                "DreamFL's test prompts never become Reward3D training data)"
            )
        if key not in by_scene:
            raise ValueError(
                f"{where}: prompt {result['prompt']!r} is not in the {list(splits)} split(s) of "
                f"{preference_set} (a held-out prompt's run must not become training data)"
            )
        if result.get("oracle") is None:
            raise ValueError(f"{where}: no oracle score")
        views, _ = read_scored_views(folder)  # (4, H, W, 3)
        if result["method"] not in configs and (folder / "run_args.json").is_file():
            args = json.loads((folder / "run_args.json").read_text())
            pairs = zip(args[:-1], args[1:], strict=True)
            configs[result["method"]] = [b for a, b in pairs if a == "--config"]
        groups.setdefault(by_scene[key]["prompt_id"], []).append(
            {"folder": folder, "result": result, "views": views}
        )
    rows, oracle = [], {}
    for prompt_id in sorted(groups):
        prompt = next(p for p in prompts if p["prompt_id"] == prompt_id)
        members = groups[prompt_id]
        ranks = _ranks([float(m["result"]["oracle"]) for m in members])
        for member, rank in zip(members, ranks, strict=True):
            result, views = member["result"], member["views"]
            cameras = default_cameras(views.shape[1])
            score = float(result["oracle"])
            asset_id = f"{prompt_id}-{result['method']}-s{result['seed']}"
            if asset_id in oracle:  # two wordings of one scene, run with one method and seed
                raise ValueError(
                    f"{member['folder']}: a second run of prompt {prompt_id} with method "
                    f"{result['method']!r} and seed {result['seed']} (keep one of them)"
                )
            oracle[asset_id] = round(score, 6)
            rows.append(
                {
                    "prompt_id": prompt_id,
                    "prompt": prompt["prompt"],
                    "asset_id": asset_id,
                    "views": [_png(v) for v in views],
                    "cameras": cameras_to_list(cameras.c2w),
                    "fovy_deg": cameras.fovy.rad2deg().tolist(),
                    "ratings": oracle_ratings(score, view_consistency(views)),
                    "rank": rank,
                    "defect": f"generated/{result['method']}",
                    "scene": prompt["scene"],
                    "composition": prompt["composition"],
                }
            )
    info = {
        "runs": str(runs),
        "preference_set": str(preference_set),
        "splits": list(splits),
        "prompts": len(groups),
        "assets": len(rows),
        "oracle_mean": round(sum(oracle.values()) / len(oracle), 4),
        "configs_by_method": configs,
        "oracle_by_asset": oracle,
    }
    return save_preference_rows(rows, out_path, info)

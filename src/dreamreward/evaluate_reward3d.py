"""Does a Reward3D rank generated assets as the oracle does? ``evaluate-reward3d``.

    python -m dreamreward evaluate-reward3d --data data/generated_test --out runs/reward3d_generated

Scores every asset of a preference set (typically one made by ``build-generated`` for held-out
prompts) with a Reward3D export (default: the shipped one) and, in the same run, its zero-shot
baseline (the same pretrained towers with an untrained head), and reports:

- pairwise agreement: over all pairs of a prompt's assets with different ranks, how often the
  reward orders them as the ranks do (with a bootstrap interval over pairs), overall and per
  source (the worse asset's ``defect`` column, ``generated/<source>`` for generated sets);
- Spearman: per prompt, between the reward and the oracle's score (``build_info.json``'s
  ``oracle_by_asset``; the rank where the set has none), averaged over prompts with at least two
  distinct scores (with a bootstrap interval), and over all assets pooled.

Writes ``reward3d_generated_eval.json`` and ``.md`` to ``out``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dreamreward.data.pairs import build_pairs
from dreamreward.data.preference import load_preference_dataset
from dreamreward.data.schema import cameras_to_tensor, conform_dataset, views_to_tensor
from dreamreward.models.reward3d.export import build_from_config, load_reward3d
from dreamreward.models.reward3d.model import Reward3D
from dreamreward.pipelines.scoring import score_batch
from dreamreward.stats import mean_ci, spearman


def zero_shot_like(model: Reward3D, seed: int = 0) -> Reward3D:
    """A model of ``model``'s architecture with its pretrained towers and an untrained head
    (seeded): what the reward is before any preference training."""
    torch.manual_seed(seed)
    fresh = build_from_config(model.build_spec())
    assert isinstance(fresh, Reward3D)
    return fresh.as_frozen_guide()


def _oracle_scores(path: Path, asset_ids: list[str], ranks: list[int]) -> list[float]:
    info = path / "build_info.json"
    by_asset = json.loads(info.read_text()).get("oracle_by_asset", {}) if info.is_file() else {}
    if all(a in by_asset for a in asset_ids):
        return [float(by_asset[a]) for a in asset_ids]
    return [-float(r) for r in ranks]  # no oracle scores recorded: the rank is the truth


def score_dataset(
    dataset: Any, models: dict[str, Reward3D], batch_assets: int = 16, progress: bool = True
) -> dict[str, list[float]]:
    """Rewards of every row of a schema dataset, per model."""
    out: dict[str, list[float]] = {name: [] for name in models}
    rows = range(0, len(dataset), batch_assets)
    for start in tqdm(rows, desc="scoring", disable=not progress, unit="batch"):
        chunk = dataset[start : start + batch_assets]
        views = torch.stack([views_to_tensor(v) for v in chunk["views"]])  # (B, 4, 3, H, W)
        cameras = torch.stack([cameras_to_tensor(c) for c in chunk["cameras"]])
        with torch.no_grad():
            for name, model in models.items():
                rewards = score_batch(chunk["prompt"], views, cameras, model, batch_assets)
                out[name] += rewards.tolist()
    return out


def evaluate_reward3d(
    data: str,
    reward: str | None = None,
    out: str | None = None,
    baselines: bool = True,
    batch_assets: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``data`` with a Reward3D export and its zero-shot baseline (see the module doc).

    Args:
        data: a preference set (``save_to_disk`` folder or parquet).
        reward: a Reward3D export folder (default: the shipped model).
        out: where to write the tables (default: print only).
        baselines: also score the zero-shot baseline.
        batch_assets: assets per forward pass.
        progress: show a progress bar.

    Returns:
        the results: per model, ``pairs``, ``agreement`` (mean, ci), ``by_source``,
        ``spearman_per_prompt`` (mean, ci) and ``spearman_pooled``.
    """
    path = Path(data)
    dataset = conform_dataset(load_preference_dataset(path))
    model = load_reward3d(reward)
    models = {"reward3d": model, **({"zero_shot": zero_shot_like(model)} if baselines else {})}
    rewards = score_dataset(dataset, models, batch_assets, progress)
    meta = dataset.select_columns(["prompt_id", "asset_id", "rank", "defect", "ratings"])[:]
    oracle = _oracle_scores(path, meta["asset_id"], meta["rank"])
    pairs = build_pairs(dataset.select_columns(["prompt_id", "rank", "defect", "ratings"]))
    if not pairs:
        raise ValueError(f"{data}: no pairs (every prompt's assets share one rank)")
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for i, prompt_id in enumerate(meta["prompt_id"]):
        by_prompt[prompt_id].append(i)
    results: dict[str, Any] = {"data": str(data), "reward": reward or "shipped", "models": {}}
    for name, values in rewards.items():
        agree = [float(values[p.better] > values[p.worse]) for p in pairs]
        sources: dict[str, list[float]] = defaultdict(list)
        for p, a in zip(pairs, agree, strict=True):
            sources[p.defect].append(a)
        per_prompt = [
            spearman([values[i] for i in rows], [oracle[i] for i in rows])
            for rows in by_prompt.values()
            if len({oracle[i] for i in rows}) > 1
        ]
        results["models"][name] = {
            "pairs": len(pairs),
            "agreement": mean_ci(agree).as_dict(),
            "by_source": {s: mean_ci(v).as_dict() for s, v in sorted(sources.items())},
            "spearman_per_prompt": mean_ci(per_prompt).as_dict() if per_prompt else None,
            "spearman_pooled": spearman(values, oracle),
        }
    results["prompts"] = len(by_prompt)
    results["assets"] = len(dataset)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "reward3d_generated_eval.json").write_text(json.dumps(results, indent=2))
        (folder / "reward3d_generated_eval.md").write_text(format_results(results))
    print(format_results(results))
    return results


def format_results(results: dict[str, Any]) -> str:
    """The Markdown table of :func:`evaluate_reward3d`'s results."""

    def ci(stats: dict[str, float] | None) -> str:
        if stats is None:
            return "n/a"
        return f"{stats['mean']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"

    models = list(results["models"])
    lines = [
        f"Generated assets: {results['assets']} assets of {results['prompts']} prompts "
        f"({results['data']}); reward: {results['reward']}.",
        "",
        "| measure | " + " | ".join(models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    first = results["models"][models[0]]
    lines.append(
        f"| pairwise agreement with the oracle ({first['pairs']} pairs) | "
        + " | ".join(ci(results["models"][m]["agreement"]) for m in models)
        + " |"
    )
    lines.append(
        "| Spearman with the oracle, per prompt | "
        + " | ".join(ci(results["models"][m]["spearman_per_prompt"]) for m in models)
        + " |"
    )
    lines.append(
        "| Spearman with the oracle, all assets pooled | "
        + " | ".join(f"{results['models'][m]['spearman_pooled']:.3f}" for m in models)
        + " |"
    )
    for source in first["by_source"]:
        n = first["by_source"][source]["n"]
        lines.append(
            f"| agreement, worse asset from {source} ({n} pairs) | "
            + " | ".join(ci(results["models"][m]["by_source"][source]) for m in models)
            + " |"
        )
    return "\n".join(lines) + "\n"

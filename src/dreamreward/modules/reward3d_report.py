"""The results table of a Reward3D run: ``reward3d_eval.json`` and ``reward3d_eval.md``."""

from __future__ import annotations

import json
from pathlib import Path

MODELS = ("reward3d", "head_only", "zero_shot")
"""The three models evaluated side by side (the trained one, and the two baselines)."""


def write_eval_table(results: dict[str, dict[str, dict[str, float]]], folder: Path) -> None:
    """``reward3d_eval.json`` (everything) and ``reward3d_eval.md`` (accuracy / ECE per split and
    model, then accuracy per failure type and per axis)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reward3d_eval.json").write_text(json.dumps(results, indent=2))
    models = [m for m in MODELS if any(m in r for r in results.values())]
    lines = ["| split | pairs | " + " | ".join(f"{m} acc / ECE" for m in models) + " |"]
    lines.append("|---|---:|" + "---:|" * len(models))
    for split, by_model in results.items():
        if not by_model:
            continue
        pairs = int(next(iter(by_model.values()))["pairs"])
        cells = [
            f"{by_model[m]['accuracy']:.1%} / {by_model[m]['ece']:.3f}" if m in by_model else "-"
            for m in models
        ]
        lines.append(f"| {split} | {pairs} | " + " | ".join(cells) + " |")
    for kind in ("defect", "axis"):
        lines += ["", f"| {kind} | split | " + " | ".join(models) + " |"]
        lines.append("|---|---|" + "---:|" * len(models))
        for split, by_model in results.items():
            names = sorted(
                {
                    k.split("/", 2)[2]
                    for r in by_model.values()
                    for k in r
                    if k.startswith(f"accuracy/{kind}/")
                }
            )
            for name in names:
                key = f"accuracy/{kind}/{name}"
                cells = [
                    f"{by_model[m][key]:.1%}" if m in by_model and key in by_model[m] else "-"
                    for m in models
                ]
                lines.append(f"| {name} | {split} | " + " | ".join(cells) + " |")
    kinds = [
        k.split("/", 1)[1]
        for k in dict.fromkeys(
            k for by_model in results.values() for r in by_model.values() for k in r
        )
        if k.startswith("text_side/")
    ]
    if kinds:
        lines += [
            "",
            "Text side: on correct assets, how often the true prompt outscores an edited one.",
            "",
            "| edit | split | n | " + " | ".join(models) + " |",
            "|---|---|---:|" + "---:|" * len(models),
        ]
        for split, by_model in results.items():
            for kind in kinds:
                key = f"text_side/{kind}"
                n = next((r[f"text_side_n/{kind}"] for r in by_model.values() if key in r), 0)
                if not n:
                    continue
                cells = [
                    f"{by_model[m][key]:.1%}" if m in by_model and key in by_model[m] else "-"
                    for m in models
                ]
                lines.append(f"| {kind} | {split} | {int(n)} | " + " | ".join(cells) + " |")
    (folder / "reward3d_eval.md").write_text("\n".join(lines) + "\n")

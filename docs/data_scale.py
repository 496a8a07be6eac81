"""The paper's open question on data scale, in the miniature: Reward3D accuracy against the
number of distinct training prompts.

    python docs/data_scale.py train      # 4 runs of ~25 min on 2 cores; resumable
    python docs/data_scale.py report     # the table (stdout), docs/images/data_scale.svg
    python docs/data_scale.py train --steps 1200 --sizes 89 714   # another budget: new rows

``train`` fits the CPU-scale Reward3D with the committed recipe
(``configs/reward3d/primitives.yaml`` + ``presets/text_side.yaml``: preference loss and crossed
term at the shipped model's learning rates, from the pretrained towers) on the first N prompts of
the training split (``PreferenceDataModule(train_prompts=N)``: nested subsets of one seeded order;
validation, test and novel prompts the same for every N) for the same number of steps, so every
size gets the same compute and the smaller ones see their prompts more often. Each run tests its
kept checkpoint (the best validation text side, as the recipe says) on the held-out and novel
prompts (``reward3d_eval.json``, written by ``fit``), and ``evaluate-reward3d`` scores its export
on the prior's oracle-ranked samples of the validation prompts (``--generated``, default
``data/generated_val``: ``build-generated --splits '[val]' --seeds 2 --guidance_scales '[1.0, 3.0]'
--steps 25``; no run trains on them, and the checkpoint choice does not read them). A run that
stopped resumes from its ``last.ckpt``; a finished one is skipped.

``report`` reads what the runs wrote (nothing is re-measured), keeps every size's figures in
``docs/data_scale_results.json`` (committed: a size recorded there is not trained again on a
machine without its run), and writes the table and the plot. Nothing here reads the test split
before training ends, and no setting depends on it.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import yaml

from dreamreward.stats import MeanCI, mean_ci

ROOT = Path("runs/data_scale")
# Every finished size's figures, committed: the runs folder is local, so a size recorded here is
# not trained again on another machine (delete its entry to measure it again).
RESULTS = Path("docs/data_scale_results.json")
RECIPE = ("configs/reward3d/primitives.yaml", "configs/reward3d/presets/text_side.yaml")
GENERATED = "data/generated_val"
# 714 training prompts in data/primitives_1k (1000 prompts: 160 novel, 42 validation, 84 test):
# all of them and halvings.
SIZES = (89, 178, 357, 714)
# The budget every size was first measured at; a run at another budget is a separate row.
DEFAULT_STEPS = 300


def run_name(size: int, steps: int) -> str:
    return f"prompts_{size}" if steps == DEFAULT_STEPS else f"prompts_{size}_steps_{steps}"


def run_dir(size: int, steps: int) -> Path:
    return ROOT / run_name(size, steps) / "version_0"


def fit_command(size: int, steps: int) -> list[str]:
    command = [sys.executable, "-m", "dreamreward", "fit"]
    for config in RECIPE:
        command += ["--config", config]
    command += [
        "--model.init_args.baselines", "false",
        "--data.init_args.train_prompts", str(size),
        "--trainer.max_steps", str(steps),
        "--trainer.logger.init_args.save_dir", str(ROOT),
        "--trainer.logger.init_args.name", run_name(size, steps),
        "--trainer.logger.init_args.version", "0",
    ]  # fmt: skip
    last = run_dir(size, steps) / "checkpoints" / "last.ckpt"
    if last.is_file():
        command += ["--ckpt_path", str(last)]
    return command


def recorded() -> dict[tuple[int, int], dict]:
    """The committed figures, by (training prompts, steps)."""
    if not RESULTS.is_file():
        return {}
    return {(row["prompts"], row["steps"]): row for row in json.loads(RESULTS.read_text())}


def train(sizes: list[int], steps: int, generated: str) -> None:
    done = recorded()
    for size in sizes:
        folder = run_dir(size, steps)
        if (size, steps) in done and not folder.exists():
            print(
                f"[data_scale] {size} prompts, {steps} steps: recorded in {RESULTS}, skipped",
                flush=True,
            )
            continue
        if not (folder / "reward3d_eval.json").is_file():
            print(f"[data_scale] training on {size} prompts: {folder}", flush=True)
            subprocess.run(fit_command(size, steps), check=True)
        out = folder / "generated"
        if not Path(generated).exists():
            print(
                f"[data_scale] no generated set at {generated}: the generated column stays "
                "empty (build it with the command in this script's docstring)",
                flush=True,
            )
        elif not (out / "reward3d_generated_eval.json").is_file():
            from dreamreward.evaluate_reward3d import evaluate_reward3d

            print(f"[data_scale] scoring {generated} with {folder / 'reward3d'}", flush=True)
            evaluate_reward3d(
                generated, reward=str(folder / "reward3d"), out=str(out), baselines=False,
                progress=False,
            )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("train", "report"))
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--generated", default=GENERATED)
    args = parser.parse_args()
    if args.action == "train":
        train(args.sizes, args.steps, args.generated)
    else:
        report(args.sizes, args.steps)


CONTENT = ("wrong_color", "wrong_shape", "swapped_attributes", "wrong_relation")
SVG_OUT = Path("docs/images/data_scale.svg")


def accuracy_ci(accuracy: float, pairs: int) -> MeanCI:
    """The bootstrap interval of an accuracy over ``pairs`` 0/1 outcomes (as the tables do)."""
    right = round(accuracy * pairs)
    return mean_ci([1.0] * right + [0.0] * (pairs - right))


def read_run(size: int, steps: int) -> dict | None:
    """One run's figures, or None if it has not finished."""
    folder = run_dir(size, steps)
    path = folder / "reward3d_eval.json"
    if not path.is_file():
        return None
    evaluation = json.loads(path.read_text())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    test, novel = evaluation["test"]["reward3d"], evaluation["novel"]["reward3d"]
    row = {
        "prompts": size,
        "steps": config["trainer"]["max_steps"],
        "lr": config["model"]["init_args"]["lr"],
        "head_lr": config["model"]["init_args"]["head_lr"],
        "held_out": accuracy_ci(test["accuracy"], int(test["pairs"])).as_dict(),
        "novel": accuracy_ci(novel["accuracy"], int(novel["pairs"])).as_dict(),
        "text_side_mean": test["text_side_mean"],
        **{d: test[f"accuracy/defect/{d}"] for d in CONTENT},
    }
    generated = folder / "generated" / "reward3d_generated_eval.json"
    if generated.is_file():
        model = json.loads(generated.read_text())["models"]["reward3d"]
        row["generated"] = model["agreement"]
        row["generated_spearman"] = model["spearman_per_prompt"]
    return row


def percent(ci: dict) -> str:
    return f"{100 * ci['mean']:.1f}% [{100 * ci['ci_low']:.1f}, {100 * ci['ci_high']:.1f}]"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| training prompts | steps | held-out pairs | novel pairs | generated pairs (Spearman) "
        "| colour | shape | swapped | relation | text side |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        generated = "not scored"
        if "generated" in r:
            generated = f"{percent(r['generated'])} ({r['generated_spearman']['mean']:+.2f})"
        content = " | ".join(f"{100 * r[d]:.1f}%" for d in CONTENT)
        lines.append(
            f"| {r['prompts']} | {r['steps']} | {percent(r['held_out'])} | {percent(r['novel'])} "
            f"| {generated} "
            f"| {content} | {100 * r['text_side_mean']:.1f}% |"
        )
    return "\n".join(lines)


def svg_plot(rows: list[dict]) -> str:
    """Accuracy (held-out, novel, generated; 95% intervals as bars) against training prompts on
    a log axis, as a self-contained SVG (no plotting library is a dependency). Rows of the first
    budget (``DEFAULT_STEPS``) are drawn in full; another budget's held-out and novel accuracy
    are dashed lines, labelled with its steps."""
    width, height, left, right, top, bottom = 600, 340, 60, 190, 20, 50
    xs = [math.log2(r["prompts"]) for r in rows]
    x_lo, x_hi = min(xs) - 0.3, max(xs) + 0.3
    y_lo, y_hi = 0.3, 1.0

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)

    def py(y: float) -> float:
        return top + (y_hi - y) / (y_hi - y_lo) * (height - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for tick in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        y = py(tick)
        dash = ' stroke-dasharray="4 3"' if tick in (0.5, 0.9) else ""
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#ccc"{dash}/>'
        )
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.0%}</text>')
    for x in sorted(set(xs)):
        prompts = round(2**x)
        out.append(
            f'<text x="{px(x):.1f}" y="{height - bottom + 18}" text-anchor="middle">'
            f"{prompts}</text>"
        )
    out.append(
        f'<text x="{(left + width - right) / 2:.1f}" y="{height - 10}" text-anchor="middle">'
        "distinct training prompts (log scale)</text>"
    )
    colours = {"held_out": "#1f77b4", "novel": "#ff7f0e", "generated": "#2ca02c"}
    labels = {"held_out": "held-out prompts", "novel": "novel compositions",
              "generated": "generated assets"}  # fmt: skip
    series = [(DEFAULT_STEPS, key, labels[key]) for key in colours]
    for steps in sorted({r["steps"] for r in rows} - {DEFAULT_STEPS}):
        series += [(steps, key, f"{labels[key].split()[0]}, {steps} steps") for key in
                   ("held_out", "novel")]  # fmt: skip
    for k, (steps, key, label) in enumerate(series):
        colour = colours[key]
        dash = "" if steps == DEFAULT_STEPS else ' stroke-dasharray="6 3"'
        points = [
            (px(x), r[key])
            for r, x in zip(rows, xs, strict=True)
            if key in r and r["steps"] == steps
        ]
        if not points:
            continue
        path = " ".join(f"{x:.1f},{py(ci['mean']):.1f}" for x, ci in points)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for x, ci in points:
            x += (list(colours).index(key) - 1) * 3  # the intervals side by side
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{py(ci["ci_low"]):.1f}" '
                f'y2="{py(ci["ci_high"]):.1f}" stroke="{colour}"/>'
            )
            out.append(f'<circle cx="{x:.1f}" cy="{py(ci["mean"]):.1f}" r="3" fill="{colour}"/>')
        y = top + 20 * k + 10
        out.append(
            f'<line x1="{width - right + 10}" x2="{width - right + 30}" y1="{y}" y2="{y}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{width - right + 35}" y="{y + 4}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def report(sizes: list[int], steps: int) -> None:
    """Figures of the runs of ``steps`` under ``ROOT`` merged into the committed ones (every
    budget's), written back to ``RESULTS``, as a table and the plot."""
    by_key = recorded()
    for size in sizes:
        row = read_run(size, steps)
        if row is not None:
            by_key[(size, steps)] = row
    rows = [by_key[key] for key in sorted(by_key, key=lambda k: (k[1], k[0]))]
    if not rows:
        raise SystemExit(f"no finished run under {ROOT}: run 'python docs/data_scale.py train'")
    settings = {(row.get("lr"), row.get("head_lr")) for row in rows}
    if len(settings) > 1:
        print(f"[data_scale] warning: the sizes were trained at other rates: {sorted(settings)}")
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    SVG_OUT.write_text(svg_plot(rows))
    print(markdown(rows))
    print(f"\n{RESULTS}, {SVG_OUT}")


if __name__ == "__main__":
    main()

"""The miniature of DreamReward's Table 1: DreamFL vs the score-distillation baseline.

    python -m dreamreward evaluate-dreamfl --out runs/dreamfl_eval

Runs ``fit`` for every (prompt, seed) with the DreamFL config and with the same config plus the
baseline overlay (no reward term), reads each run's ``result.json``, and writes
``<out>/dreamfl_eval.{md,json}``: per method the mean Reward3D score and oracle score with 95%
bootstrap intervals, over all prompts and per split (train-split / novel compositions, when the
prompts belong to the primitives world), and DreamFL's win-rate over the baseline by the oracle,
paired by prompt and seed (a tie counts one half). Runs whose ``result.json`` exists are reused,
so an interrupted evaluation continues where it stopped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from dreamreward.stats import mean_ci
from dreamreward.world.prompts import is_novel, parse_prompt

METHODS = ("dreamfl", "sds")


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts, one per line (``#`` starts a comment line).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a blank line, a duplicate prompt, or no prompt at all, naming the line.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no prompt file at {file}")
    prompts: list[str] = []
    first_line: dict[str, int] = {}
    lines = file.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # trailing newlines are fine
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text.startswith("#"):
            continue
        if not text:
            raise ValueError(f"{file}:{number}: blank line (one prompt per line)")
        if text in first_line:
            raise ValueError(f"{file}:{number}: duplicate of line {first_line[text]} ({text!r})")
        first_line[text] = number
        prompts.append(text)
    if not prompts:
        raise ValueError(f"{file}: no prompts")
    return prompts


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "prompt"


def _split(prompt: str) -> str:
    try:
        return "novel" if is_novel(parse_prompt(prompt)) else "train"
    except ValueError:
        return "free"


def evaluate_dreamfl(
    out: str = "runs/dreamfl_eval",
    dreamfl_config: str = "configs/dreamfl/primitives.yaml",
    baseline_overlay: str = "configs/dreamfl/primitives_sds.yaml",
    prompts: str = "configs/dreamfl/eval_prompts.txt",
    seeds: list[int] | None = None,
    extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run DreamFL and the baseline on every prompt and seed, then write the table.

    Args:
        out: the evaluation folder (one sub-folder per run, the tables at the top).
        dreamfl_config: the DreamFL config (named so, not ``config``: ``--config`` reads a
            file of this command's own arguments).
        baseline_overlay: a config applied on top of ``dreamfl_config`` for the baseline.
        prompts: the prompt file (one per line).
        seeds: seeds per prompt (default 0 and 1).
        extra_args: more command-line overrides for every run (e.g. ``--trainer.max_steps``).

    Returns:
        The table written to ``dreamfl_eval.json``.
    """
    from dreamreward.cli import main

    seeds = [0, 1] if seeds is None else seeds
    if not seeds:
        raise ValueError("--seeds is empty")
    for path in (dreamfl_config, baseline_overlay):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no config at {path}")
    prompt_list = read_prompt_file(prompts)
    root = Path(out)
    rows: list[dict[str, Any]] = []
    for prompt in prompt_list:
        for seed in seeds:
            for method in METHODS:
                run_dir = root / method / f"{_slug(prompt)}" / f"seed{seed}"
                result_file = run_dir / "result.json"
                if not result_file.is_file():
                    args = ["fit", "--config", dreamfl_config]
                    if method == "sds":
                        args += ["--config", baseline_overlay]
                    args += [
                        "--model.init_args.prompt",
                        prompt,
                        "--model.init_args.seed",
                        str(seed),
                        "--seed_everything",
                        str(seed),
                        "--trainer.logger",
                        "false",
                        "--trainer.default_root_dir",
                        str(run_dir),
                        "--trainer.enable_checkpointing",
                        "false",
                        "--trainer.callbacks",
                        "null",
                        *(extra_args or []),
                    ]
                    main(args)
                result = json.loads(result_file.read_text())
                rows.append({**result, "method": method, "split": _split(prompt)})
    table = summarise_runs(rows)
    table["runs"] = rows
    root.mkdir(parents=True, exist_ok=True)
    (root / "dreamfl_eval.json").write_text(json.dumps(table, indent=2) + "\n")
    (root / "dreamfl_eval.md").write_text(format_table(table))
    print(format_table(table))
    return table


def summarise_runs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means with 95% CIs per method and split, and DreamFL's paired win-rate by the oracle."""
    table: dict[str, Any] = {"methods": {}, "win_rate": {}}
    splits = ["all"] + sorted({r["split"] for r in rows})
    for method in METHODS:
        for split in splits:
            chosen = [r for r in rows if r["method"] == method and split in ("all", r["split"])]
            if not chosen:
                continue
            entry: dict[str, Any] = {"n": len(chosen)}
            for metric in ("reward", "oracle"):
                values = [r[metric] for r in chosen if metric in r]
                if values:
                    entry[metric] = mean_ci(values).as_dict()
            table["methods"][f"{method}/{split}"] = entry
    paired: dict[tuple[str, int], dict[str, float]] = {}
    for r in rows:
        if "oracle" in r:
            paired.setdefault((r["prompt"], r["seed"]), {})[r["method"]] = r["oracle"]
    for split in splits:
        wins = [
            1.0 if s["dreamfl"] > s["sds"] else 0.5 if s["dreamfl"] == s["sds"] else 0.0
            for (prompt, _), s in paired.items()
            if len(s) == 2 and split in ("all", _split(prompt))
        ]
        if wins:
            table["win_rate"][split] = mean_ci(wins).as_dict()
    return table


def format_table(table: dict[str, Any]) -> str:
    """The Markdown version of :func:`summarise_runs`' table."""

    def cell(stats: dict[str, Any] | None) -> str:
        if not stats:
            return "–"
        return f"{stats['mean']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"

    lines = [
        "| method | prompts | runs | Reward3D | oracle |",
        "|---|---|---:|---|---|",
    ]
    for key, entry in table["methods"].items():
        method, split = key.split("/")
        lines.append(
            f"| {method} | {split} | {entry['n']} | {cell(entry.get('reward'))} | "
            f"{cell(entry.get('oracle'))} |"
        )
    lines += [
        "",
        "| DreamFL win-rate over SDS (oracle, paired) | prompts | value |",
        "|---|---|---|",
    ]
    for split, stats in table["win_rate"].items():
        lines.append(f"| | {split} | {cell(stats)} (n={stats['n']}) |")
    return "\n".join(lines) + "\n"

"""The miniature of DreamReward's Table 1: DreamFL vs the score-distillation baseline.

    python -m dreamreward evaluate-dreamfl --out runs/dreamfl_eval

Runs ``fit`` for every (prompt, seed) with the DreamFL config and with the same config plus the
baseline overlay (no reward term), reads each run's ``result.json``, and writes
``<out>/dreamfl_eval.{md,json}``: per method the mean Reward3D score and oracle score with 95%
bootstrap intervals, over all prompts and per split (train-split / novel compositions, when the
prompts belong to the primitives world), and DreamFL's win-rate over the baseline by the oracle,
paired by prompt and seed (a tie counts one half). Runs whose ``result.json`` exists are reused,
so an interrupted evaluation continues where it stopped. ``--workers N`` shares the runs among
N processes (CPU) or devices (GPUs) launched by Lightning Fabric; the table is gathered from the
runs' ``result.json`` files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dreamreward.render.export import file_slug
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
    workers: int = 1,
    accelerator: str = "cpu",
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
        workers: processes (CPU) or devices (GPU) sharing the runs, launched by Lightning
            Fabric; worker k takes runs k, k + workers, ... (each run is one prompt, seed and
            method on one device).
        accelerator: ``cpu`` or ``cuda`` for the workers' runs.
        extra_args: more command-line overrides for every run (e.g. ``--trainer.max_steps``).

    Returns:
        The table written to ``dreamfl_eval.json``.
    """
    seeds = [0, 1] if seeds is None else seeds
    if not seeds:
        raise ValueError("--seeds is empty")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    for path in (dreamfl_config, baseline_overlay):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no config at {path}")
    prompt_list = read_prompt_file(prompts)
    root = Path(out)
    jobs = [
        {"prompt": p, "seed": s, "method": m, "dir": str(root / m / file_slug(p) / f"seed{s}")}
        for p in prompt_list
        for s in seeds
        for m in METHODS
    ]
    todo = [j for j in jobs if not (Path(j["dir"]) / "result.json").is_file()]
    common = (dreamfl_config, baseline_overlay, extra_args or [])
    if workers == 1 or len(todo) <= 1:
        for job in todo:
            _run(job, *common, accelerator=accelerator, device=None)
    else:
        from lightning.fabric import Fabric

        fabric = Fabric(accelerator=accelerator, devices=workers, strategy="ddp_spawn")
        fabric.launch(_worker, todo, common)
    rows = []
    for job in jobs:
        result_file = Path(job["dir"]) / "result.json"
        if not result_file.is_file():
            raise RuntimeError(f"run {job} wrote no {result_file}")
        result = json.loads(result_file.read_text())
        rows.append({**result, "method": job["method"], "split": _split(job["prompt"])})
    table = summarise_runs(rows)
    table["runs"] = rows
    root.mkdir(parents=True, exist_ok=True)
    (root / "dreamfl_eval.json").write_text(json.dumps(table, indent=2) + "\n")
    (root / "dreamfl_eval.md").write_text(format_table(table))
    print(format_table(table))
    return table


def _worker(fabric: Any, todo: list[dict[str, Any]], common: tuple) -> None:
    """One Fabric process: its share of the runs, one device each, then wait for the others."""
    import torch

    rank, world = fabric.global_rank, fabric.world_size
    if fabric.device.type == "cpu":
        # the machine's cores are shared by the workers
        torch.set_num_threads(max(1, torch.get_num_threads() // world))
    device = fabric.device.index if fabric.device.type == "cuda" else None
    for job in todo[rank::world]:
        _run(job, *common, accelerator=fabric.device.type, device=device)
    fabric.barrier()


def _run(
    job: dict[str, Any],
    dreamfl_config: str,
    baseline_overlay: str,
    extra_args: list[str],
    accelerator: str,
    device: int | None,
) -> None:
    """``fit`` one (prompt, seed, method) into ``job["dir"]``."""
    from dreamreward.cli import main

    args = ["fit", "--config", dreamfl_config]
    if job["method"] == "sds":
        args += ["--config", baseline_overlay]
    args += [
        "--model.init_args.prompt",
        job["prompt"],
        "--model.init_args.seed",
        str(job["seed"]),
        "--seed_everything",
        str(job["seed"]),
        "--trainer.accelerator",
        accelerator,
        "--trainer.devices",
        f"[{device}]" if device is not None else "1",
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        job["dir"],
        "--trainer.enable_checkpointing",
        "false",
        "--trainer.callbacks",
        "null",
        *extra_args,
    ]
    main(args)


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

"""The miniature of DreamReward's Table 1: DreamFL vs the score-distillation baseline.

    python -m dreamreward evaluate-dreamfl --out runs/dreamfl_eval

Runs ``fit`` for every (prompt, seed) with the DreamFL config and with the same config plus the
baseline overlay (no reward term), reads each run's ``result.json``, and writes
``<out>/dreamfl_eval.{md,json}``: per method the mean Reward3D score and oracle score with 95%
bootstrap intervals and the mean fit time, over all prompts, per split (train-split / novel
compositions) and per object count (for prompts of the primitives world), and DreamFL's win-rate
over the baseline by the oracle, paired by prompt and seed (a tie counts one half), with the
mean paired oracle gain (how much, beside how often). ``--methods`` adds more methods to the
same prompts and seeds, each a name and its overlays (e.g. the reward as a ranker,
``presets/ranker.yaml``, or the positive controls), each paired with SDS the same way; runs where
the Reward3D score rose over SDS while the oracle's fell are counted as reward hacking. A
``reference`` row scores each prompt's ground-truth scene the same way. Runs whose
``result.json`` exists are reused, so an interrupted evaluation continues where it stopped.
``--workers N`` shares the runs among N processes (CPU) or devices (GPUs) launched by Lightning
Fabric, each taking the next unclaimed run; the table is gathered from the runs' ``result.json``
files, with each run's oracle score recomputed by the current oracle from the canonical views
it saved (``views.png``), so runs made before a change of the oracle's rules are judged by the
same rules as the rest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dreamreward.render.export import unique_slug
from dreamreward.stats import mean_ci, spearman
from dreamreward.world.prompts import ground_truth_scene, is_novel

METHODS = ("dreamfl", "sds")
"""The two methods every evaluation runs; ``--methods`` adds more."""
CLAIM_FILE = ".claimed"  # a worker's mark on the run it is doing


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


def _groups(prompt: str) -> list[str]:
    """The table rows a prompt counts in besides "all": its split (train-split / novel
    composition) and its object count, for primitives prompts; "free" otherwise."""
    scene = ground_truth_scene(prompt)
    if scene is None:
        return ["free"]
    count = len(scene.objects)
    return ["novel" if is_novel(scene) else "train", f"{count} object{'s' * (count > 1)}"]


def evaluate_dreamfl(
    out: str = "runs/dreamfl_eval",
    dreamfl_config: str = "configs/dreamfl/primitives.yaml",
    baseline_overlay: str = "configs/dreamfl/primitives_sds.yaml",
    dreamfl_overlays: list[str] | None = None,
    prompts: str = "configs/dreamfl/eval_prompts.txt",
    seeds: list[int] | None = None,
    workers: int = 1,
    accelerator: str = "cpu",
    extra_args: list[str] | None = None,
    methods: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Run DreamFL and the baseline on every prompt and seed, then write the table.

    Args:
        out: the evaluation folder (one sub-folder per run, the tables at the top).
        dreamfl_config: the DreamFL config (named so, not ``config``: ``--config`` reads a
            file of this command's own arguments).
        baseline_overlay: a config applied on top of ``dreamfl_config`` for the baseline.
        dreamfl_overlays: configs applied on top of ``dreamfl_config`` for the DreamFL runs
            only (a reward preset, or ``presets/ground_truth_judge.yaml``, the positive
            control); the baseline and the reference rows do not see them.
        prompts: the prompt file (one per line).
        seeds: seeds per prompt (default 0 and 1).
        workers: processes (CPU) or devices (GPU) sharing the runs, launched by Lightning
            Fabric; each worker takes the next unclaimed run (each run is one prompt, seed and
            method on one device).
        accelerator: ``cpu`` or ``cuda`` for the workers' runs.
        extra_args: more command-line overrides for every run (e.g. ``--trainer.max_steps``).
        methods: more methods run on the same prompts and seeds, each a name (its runs'
            folder) and the overlays applied on top of ``dreamfl_config`` for it, e.g.
            ``{ranker: [configs/dreamfl/presets/ranker.yaml]}``.

    Returns:
        The table written to ``dreamfl_eval.json``.
    """
    seeds = [0, 1] if seeds is None else seeds
    if not seeds:
        raise ValueError("--seeds is empty")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    dreamfl_overlays = list(dreamfl_overlays or [])
    overlays = {"dreamfl": dreamfl_overlays, "sds": [baseline_overlay], **_check_methods(methods)}
    for path in (dreamfl_config, *(p for paths in overlays.values() for p in paths)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no config at {path}")
    prompt_list = read_prompt_file(prompts)
    root = Path(out)
    jobs = [
        # one folder per exact prompt (a slug alone folds "a red cube" and "A red cube!")
        {"prompt": p, "seed": s, "method": m, "dir": str(root / m / unique_slug(p) / f"seed{s}")}
        for p in prompt_list
        for s in seeds
        for m in overlays
    ]
    if len({j["dir"] for j in jobs}) != len(jobs):  # a hash collision: never overwrite a run
        raise RuntimeError("two prompts map to one run folder; rename one of them")
    common = (dreamfl_config, overlays, extra_args or [])
    todo = [j for j in jobs if not (Path(j["dir"]) / "result.json").is_file()]
    for job in jobs:
        if job not in todo:
            _check_reusable(job, common)
    _clear_claims(todo)  # left by an interrupted evaluation
    if workers == 1 or len(todo) <= 1:
        for job in todo:
            _run(job, *common, accelerator=accelerator, device=None)
    else:
        from lightning.fabric import Fabric

        fabric = Fabric(accelerator=accelerator, devices=workers, strategy="ddp_spawn")
        fabric.launch(_worker, todo, common)
        _clear_claims(todo)
    rows = []
    for job in jobs:
        result_file = Path(job["dir"]) / "result.json"
        if not result_file.is_file():
            raise RuntimeError(f"run {job} wrote no {result_file}")
        result = json.loads(result_file.read_text())
        row = {**result, "method": job["method"], "groups": _groups(job["prompt"])}
        rows.append(rescore_oracle(row, Path(job["dir"])))
    rows += reference_rows(dreamfl_config, prompt_list, extra_args or [])
    table = summarise_runs(rows, list(overlays))
    table["setup"] = {  # what was measured, next to the figures
        "dreamfl_config": dreamfl_config,
        "dreamfl_overlays": dreamfl_overlays,
        "baseline_overlay": baseline_overlay,
        "methods": {m: paths for m, paths in overlays.items() if m not in METHODS},
        "extra_args": extra_args or [],
        "prompts": prompts,
        "seeds": seeds,
    }
    table["runs"] = rows
    root.mkdir(parents=True, exist_ok=True)
    (root / "dreamfl_eval.json").write_text(json.dumps(table, indent=2) + "\n")
    (root / "dreamfl_eval.md").write_text(format_table(table))
    print(format_table(table))
    return table


def _check_methods(methods: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """``--methods`` checked: names that can be folder names and are not taken."""
    methods = dict(methods or {})
    for name, paths in methods.items():
        if name in (*METHODS, "reference") or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(
                f"--methods: {name!r} is not a usable method name (letters, digits, '_' and "
                f"'-'; not one of {(*METHODS, 'reference')})"
            )
        if isinstance(paths, str) or not all(isinstance(p, str) for p in paths):
            raise ValueError(f"--methods: {name!r} needs a list of config paths, got {paths!r}")
    return methods


def rescore_oracle(row: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The run's oracle score (and degeneracy note) by the current oracle, from the canonical
    views the run was scored on (``eval_views.png``; ``views.png`` in older runs): a table
    compares runs by one set of rules, whenever each run was made. Free-text prompts and runs
    without saved views keep what they have."""
    from dreamreward.render.export import read_scored_views
    from dreamreward.world.oracle import oracle_score
    from dreamreward.world.views import default_cameras

    scene = ground_truth_scene(row["prompt"])
    if scene is None:
        return row
    try:
        views, source = read_scored_views(run_dir)
    except FileNotFoundError:
        return row
    judged = oracle_score(views, scene, default_cameras(views.shape[1]))
    row = {**row, "oracle": judged.total, "oracle_from": source}
    row.pop("degenerate", None)
    if judged.degenerate:
        row["degenerate"] = judged.degenerate
    return row


def reference_rows(
    dreamfl_config: str, prompts: list[str], extra_args: list[str]
) -> list[dict[str, Any]]:
    """The ground-truth scene of every primitives prompt (one row per prompt, seed 0), rendered
    by the world's renderer (shaded, as Reward3D's training views were) from the canonical
    cameras at the config's evaluation resolution and scored by the same Reward3D and oracle as
    the runs: the oracle's ceiling, and the Reward3D score of a correct object. The runs' assets
    are rendered by their own mesh renderer, so this is a reference level, not a paired
    comparison; an asset that outscores its ground truth by Reward3D while the oracle scores it
    lower is what reward hacking looks like."""
    import torch

    from dreamreward.lightning_cli import build_from_config
    from dreamreward.world.oracle import oracle_score
    from dreamreward.world.views import default_cameras, ground_truth_views

    # free-text prompts have no ground truth to render
    scenes = {p: scene for p in prompts if (scene := ground_truth_scene(p)) is not None}
    if not scenes:
        return []
    cli = build_from_config(["--config", dreamfl_config, *extra_args, "--trainer.logger", "false"])
    module = cli.model
    cams = default_cameras(module.hparams.eval_resolution)
    rows = []
    for prompt, scene in scenes.items():
        views = ground_truth_views(scene, cams)
        row: dict[str, Any] = {"prompt": prompt, "seed": 0, "method": "reference"}
        row["groups"] = _groups(prompt)
        row["oracle"] = oracle_score(views, scene, cams).total
        if module.eval_reward_model is not None:
            with torch.no_grad():
                reward = module.eval_reward_model.score(views[None], [prompt], cameras=cams)
            row["reward"] = float(reward[0])
        rows.append(row)
    return rows


def _worker(fabric: Any, todo: list[dict[str, Any]], common: tuple) -> None:
    """One Fabric process: its share of the runs, one device each, then wait for the others."""
    import torch

    rank, world = fabric.global_rank, fabric.world_size
    threads = torch.get_num_threads()
    if fabric.device.type == "cpu":
        # the machine's cores are shared by the workers
        torch.set_num_threads(max(1, threads // world))
    device = fabric.device.index if fabric.device.type == "cuda" else None
    try:
        # a shared queue rather than a fixed split: runs differ in cost (DreamFL steps are
        # dearer than SDS steps), and a worker that finishes early takes the next unclaimed run
        for job in todo:
            if _claim(job["dir"], rank):
                _run(job, *common, accelerator=fabric.device.type, device=device)
        fabric.barrier()
    finally:
        # rank 0 is the calling process: leave its thread count as it was
        torch.set_num_threads(threads)


def _clear_claims(jobs: list[dict[str, Any]]) -> None:
    for job in jobs:
        Path(job["dir"], CLAIM_FILE).unlink(missing_ok=True)


def _claim(run_dir: str, rank: int) -> bool:
    """Atomically take a run (the first worker to create its claim file wins)."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(folder / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{rank}\n")
    return True


RUN_ARGS_FILE = "run_args.json"  # what a run was made with, checked before it is reused


def _run_args(
    job: dict[str, Any],
    dreamfl_config: str,
    overlays: dict[str, list[str]],
    extra_args: list[str],
) -> list[str]:
    """The configs and overrides that define one run (not where it runs)."""
    args = ["--config", dreamfl_config]
    for overlay in overlays[job["method"]]:
        args += ["--config", overlay]
    args += ["--model.init_args.prompt", job["prompt"], "--model.init_args.seed", str(job["seed"])]
    return [*args, "--seed_everything", str(job["seed"]), *extra_args]


def _check_reusable(job: dict[str, Any], common: tuple) -> None:
    """A finished run is reused only if it was made with this evaluation's configs.

    Raises:
        ValueError: the run folder holds a run made with other configs or overrides.
    """
    recorded = Path(job["dir"]) / RUN_ARGS_FILE
    if not recorded.is_file():
        return  # made before runs recorded their arguments
    saved, wanted = json.loads(recorded.read_text()), _run_args(job, *common)
    if saved != wanted:
        raise ValueError(
            f"{job['dir']} holds a run made with {saved}, but this evaluation asks for "
            f"{wanted}: use another --out, or delete that run folder to redo it"
        )


def _run(
    job: dict[str, Any],
    dreamfl_config: str,
    overlays: dict[str, list[str]],
    extra_args: list[str],
    accelerator: str,
    device: int | None,
) -> None:
    """``fit`` one (prompt, seed, method) into ``job["dir"]``."""
    from dreamreward.lightning_cli import run_lightning

    run_args = _run_args(job, dreamfl_config, overlays, extra_args)
    Path(job["dir"]).mkdir(parents=True, exist_ok=True)
    (Path(job["dir"]) / RUN_ARGS_FILE).write_text(json.dumps(run_args, indent=1) + "\n")
    placement = [
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
    ]
    # the run's own overrides last, as before: they may override the placement defaults
    run_lightning(["fit", *run_args[: -len(extra_args) or None], *placement, *extra_args])


def summarise_runs(rows: list[dict[str, Any]], methods: list[str] | None = None) -> dict[str, Any]:
    """Means with 95% CIs per method and prompt group, and each method's paired comparison
    with SDS by the oracle (:func:`versus_baseline`); ``win_rate`` and ``oracle_gain`` at the
    top are DreamFL's. Each row has ``method``, ``prompt``, ``seed``, ``groups`` (e.g.
    ``["train", "1 object"]``) and the run's scores (``reward``, ``oracle``, ``fit_seconds``).
    ``methods``: the methods run (default :data:`METHODS`)."""
    methods = list(methods or METHODS)
    table: dict[str, Any] = {"methods": {}, "win_rate": {}, "oracle_gain": {}, "versus_sds": {}}
    groups = ["all"] + sorted({g for r in rows for g in r["groups"]})

    def member(row: dict[str, Any], group: str) -> bool:
        return group == "all" or group in row["groups"]

    for method in (*methods, "reference"):
        for group in groups:
            chosen = [r for r in rows if r["method"] == method and member(r, group)]
            if not chosen:
                continue
            entry: dict[str, Any] = {"n": len(chosen)}
            for metric in ("reward", "oracle", "fit_seconds"):
                values = [r[metric] for r in chosen if metric in r]
                if values:
                    entry[metric] = mean_ci(values).as_dict()
            table["methods"][f"{method}/{group}"] = entry
    for method in methods:
        if method != "sds":
            table["versus_sds"][method] = versus_baseline(rows, method, groups)
    dreamfl = table["versus_sds"].get("dreamfl", {})
    table["win_rate"] = dreamfl.get("win_rate", {})
    table["oracle_gain"] = dreamfl.get("oracle_gain", {})
    # assets that are not assets at all (empty, frame-filling, noise): named, not hidden in a mean
    degenerate = [
        {"method": r["method"], "prompt": r["prompt"], "seed": r["seed"], "why": r["degenerate"]}
        for r in rows
        if r.get("degenerate")
    ]
    if degenerate:
        table["degenerate"] = degenerate
    # how far the judge agrees with the truth on these assets (not on its own test set)
    scored = [r for r in rows if r["method"] in methods and "reward" in r and "oracle" in r]
    if len(scored) >= 3:
        table["reward_oracle_spearman"] = spearman(
            [r["reward"] for r in scored], [r["oracle"] for r in scored]
        )
    table["per_prompt"] = per_prompt(rows, [*methods, "reference"])
    return table


def per_prompt(rows: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """Each prompt's oracle score per method, averaged over its seeds (with the seeds' own
    scores kept), in the order the prompts first appear: where a method helped, and on which
    seeds, rather than only on average. Methods without a run of the prompt are left out."""
    prompts: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["method"] not in methods or "oracle" not in r:
            continue
        entry = prompts.setdefault(r["prompt"], {"prompt": r["prompt"], "groups": r["groups"]})
        scores = entry.setdefault("oracle", {}).setdefault(r["method"], {})
        scores[str(r["seed"])] = r["oracle"]  # reference rows are seed 0
    out = []
    for entry in prompts.values():
        entry["oracle"] = {
            m: {"mean": sum(s.values()) / len(s), "by_seed": s}
            for m in methods
            if (s := entry["oracle"].get(m))
        }
        out.append(entry)
    return out


def versus_baseline(
    rows: list[dict[str, Any]], method: str, groups: list[str], baseline: str = "sds"
) -> dict[str, Any]:
    """``method`` against ``baseline``, paired by prompt and seed, per prompt group: the
    oracle win-rate (a tie counts one half), the mean paired oracle gain, and reward hacking
    (pairs where the Reward3D score rose over the baseline while the oracle's fell; listed)."""
    paired: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        if r["method"] in (method, baseline) and "oracle" in r:
            pair = paired.setdefault((r["prompt"], r["seed"]), {"groups": r["groups"]})
            pair[r["method"]] = r
    both = [(key, p) for key, p in paired.items() if method in p and baseline in p]
    out: dict[str, Any] = {"win_rate": {}, "oracle_gain": {}}
    for group in groups:
        pairs = [
            (p[method]["oracle"], p[baseline]["oracle"])
            for _, p in both
            if group == "all" or group in p["groups"]
        ]
        if pairs:
            wins = [1.0 if m > b else 0.5 if m == b else 0.0 for m, b in pairs]
            out["win_rate"][group] = mean_ci(wins).as_dict()
            # how much, not only how often: the paired oracle difference
            out["oracle_gain"][group] = mean_ci([m - b for m, b in pairs]).as_dict()
    judged = [(key, p) for key, p in both if "reward" in p[method] and "reward" in p[baseline]]
    hacked = [
        {"prompt": prompt, "seed": seed}
        for (prompt, seed), p in judged
        if p[method]["reward"] > p[baseline]["reward"]
        and p[method]["oracle"] < p[baseline]["oracle"]
    ]
    out["reward_hacking"] = {"runs": len(hacked), "of": len(judged), "pairs": hacked}
    return out


def format_table(table: dict[str, Any]) -> str:
    """The Markdown version of :func:`summarise_runs`' table."""

    def cell(stats: dict[str, Any] | None) -> str:
        if not stats:
            return "–"
        return f"{stats['mean']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"

    def seconds(stats: dict[str, Any] | None) -> str:
        return f"{stats['mean']:.0f}" if stats else "–"

    lines = [
        "| method | prompts | runs | Reward3D | oracle | fit s |",
        "|---|---|---:|---|---|---:|",
    ]
    for key, entry in table["methods"].items():
        method, group = key.split("/")
        lines.append(
            f"| {method} | {group} | {entry['n']} | {cell(entry.get('reward'))} | "
            f"{cell(entry.get('oracle'))} | {seconds(entry.get('fit_seconds'))} |"
        )
    versus = table.get("versus_sds") or {"dreamfl": table}  # a table from before --methods
    for method, paired in versus.items():
        name = "DreamFL" if method == "dreamfl" else method
        paired_tables = [(f"{name} win-rate over SDS (oracle, paired)", paired["win_rate"])]
        if paired.get("oracle_gain"):
            title = f"{name} oracle gain over SDS (paired mean difference)"
            paired_tables.append((title, paired["oracle_gain"]))
        for title, by_group in paired_tables:
            lines += ["", f"| {title} | prompts | value |", "|---|---|---|"]
            for split, stats in by_group.items():
                lines.append(f"| | {split} | {cell(stats)} (n={stats['n']}) |")
        hacking = paired.get("reward_hacking")
        if hacking and hacking["of"]:
            lines += [
                "",
                f"{name}: Reward3D rose over SDS while the oracle fell (reward hacking) in "
                f"{hacking['runs']} of {hacking['of']} paired runs",
            ]
    if "reward_oracle_spearman" in table:
        lines += [
            "",
            "Spearman correlation of Reward3D and oracle scores over all runs: "
            f"{table['reward_oracle_spearman']:.3f}",
        ]
    lines += format_per_prompt(table.get("per_prompt", []))
    for run in table.get("degenerate", []):
        lines += [
            "",
            f"Degenerate asset ({run['why']}): {run['method']}, {run['prompt']!r}, "
            f"seed {run['seed']}",
        ]
    return "\n".join(lines) + "\n"


def format_per_prompt(prompts: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of :func:`per_prompt`: one row per prompt, each method's oracle mean over
    its seeds with the seeds' scores in brackets (none for the single reference)."""
    if not prompts:
        return []
    methods = list(dict.fromkeys(m for p in prompts for m in p["oracle"]))
    lines = [
        "",
        "Oracle per prompt, mean over seeds (each seed's score in brackets):",
        "",
        "| prompt | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for entry in prompts:
        cells = []
        for method in methods:
            scores = entry["oracle"].get(method)
            if scores is None:
                cells.append("–")
                continue
            seeds = scores["by_seed"]
            detail = (
                "" if len(seeds) < 2 else " (" + ", ".join(f"{v:.2f}" for v in seeds.values()) + ")"
            )
            cells.append(f"{scores['mean']:.3f}{detail}")
        lines.append(f"| {entry['prompt']} | " + " | ".join(cells) + " |")
    return lines

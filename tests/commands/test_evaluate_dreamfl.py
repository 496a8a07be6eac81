"""The DreamFL vs SDS evaluation: prompt files, the run loop, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _dreamfl_tiny import tiny_evaluation_setup
from dreamreward.cli import main
from dreamreward.evaluate_dreamfl import format_table, read_prompt_file, summarise_runs
from dreamreward.stats import spearman

ROOT = Path(__file__).resolve().parents[2]


def test_prompt_file_errors(tmp_path) -> None:
    good = tmp_path / "p.txt"
    good.write_text("# comment\na red cube\na blue sphere\n\n")
    assert read_prompt_file(good) == ["a red cube", "a blue sphere"]
    (tmp_path / "blank.txt").write_text("a red cube\n\na blue sphere\n")
    with pytest.raises(ValueError, match="blank.txt:2: blank line"):
        read_prompt_file(tmp_path / "blank.txt")
    (tmp_path / "dup.txt").write_text("a red cube\na blue sphere\n a red cube\n")
    with pytest.raises(ValueError, match="dup.txt:3: duplicate of line 1"):
        read_prompt_file(tmp_path / "dup.txt")
    with pytest.raises(FileNotFoundError, match="no prompt file"):
        read_prompt_file(tmp_path / "none.txt")


def test_a_run_is_claimed_once(tmp_path) -> None:
    from dreamreward.evaluate_dreamfl import _claim

    run = tmp_path / "dreamfl" / "a_red_cube" / "seed0"
    assert _claim(str(run), rank=0)
    assert not _claim(str(run), rank=1)  # the other worker skips it
    assert (run / ".claimed").read_text() == "0\n"


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share their average rank: ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)


def test_win_rate_is_paired_and_counts_ties_half() -> None:
    def row(seed, method, oracle):
        return {"prompt": "a red cube", "seed": seed, "method": method, "groups": ["train"],
                "oracle": oracle}  # fmt: skip

    rows = [row(0, "dreamfl", 0.8), row(0, "sds", 0.6), row(1, "dreamfl", 0.5), row(1, "sds", 0.5)]
    rows.append(row(2, "dreamfl", 1.0))  # unpaired: counts in the means, not in the win-rate
    table = summarise_runs(rows)
    assert table["win_rate"]["all"]["mean"] == pytest.approx(0.75)
    assert table["win_rate"]["train"]["n"] == 2
    assert table["methods"]["dreamfl/all"]["oracle"]["mean"] == pytest.approx(2.3 / 3)
    assert table["oracle_gain"]["all"]["mean"] == pytest.approx((0.2 + 0.0) / 2)
    assert table["oracle_gain"]["all"]["n"] == 2
    assert "| | all | 0.100 [" in format_table(table)


def test_degenerate_runs_are_named_in_the_table() -> None:
    rows = [
        {"prompt": "a red cube", "seed": 0, "method": "dreamfl", "groups": ["train"],
         "oracle": 0.0, "degenerate": "empty"},
        {"prompt": "a red cube", "seed": 0, "method": "sds", "groups": ["train"], "oracle": 0.7},
    ]  # fmt: skip
    table = summarise_runs(rows)
    assert table["degenerate"] == [
        {"method": "dreamfl", "prompt": "a red cube", "seed": 0, "why": "empty"}
    ]
    assert "Degenerate asset (empty): dreamfl, 'a red cube', seed 0" in format_table(table)
    assert "degenerate" not in summarise_runs(rows[1:])


def test_evaluation_runs_both_methods_and_resumes(tmp_path) -> None:
    """Two prompts x one seed x two methods on a tiny saved prior, 3 steps each."""
    tiny, prompts = tiny_evaluation_setup(tmp_path)
    args = [
        "evaluate-dreamfl",
        "--out",
        str(tmp_path / "eval"),
        "--dreamfl_config",
        str(tiny),
        "--prompts",
        str(prompts),
        "--seeds",
        "[0]",
    ]
    table = main(args)
    runs = [r for r in table["runs"] if r["method"] != "reference"]
    reference = [r for r in table["runs"] if r["method"] == "reference"]
    assert [r["prompt"] for r in reference] == prompts.read_text().splitlines()
    assert all(0 <= r["oracle"] <= 1 and isinstance(r["reward"], float) for r in reference)
    assert table["methods"]["reference/all"]["n"] == 2
    assert sorted((r["method"], r["prompt"]) for r in runs) == sorted(
        (m, p) for m in ("dreamfl", "sds") for p in prompts.read_text().splitlines()
    )
    assert all(0 <= r["oracle"] <= 1 and "reward" in r for r in runs)
    assert table["win_rate"]["all"]["n"] == 2
    assert "| dreamfl | all | 2 |" in (tmp_path / "eval" / "dreamfl_eval.md").read_text()
    # a second call reuses every finished run
    stamp = {p: p.stat().st_mtime for p in (tmp_path / "eval").rglob("result.json")}
    main(args)
    assert {p: p.stat().st_mtime for p in (tmp_path / "eval").rglob("result.json")} == stamp
    saved = json.loads((tmp_path / "eval" / "dreamfl_eval.json").read_text())
    assert saved["methods"].keys() == table["methods"].keys()


@pytest.mark.slow
def test_two_worker_processes_share_the_runs(tmp_path) -> None:
    """The same evaluation spread over 2 CPU processes (Lightning Fabric, ddp_spawn)."""
    tiny, prompts = tiny_evaluation_setup(tmp_path)
    table = main(
        [
            "evaluate-dreamfl",
            "--out",
            str(tmp_path / "eval"),
            "--dreamfl_config",
            str(tiny),
            "--prompts",
            str(prompts),
            "--seeds",
            "[0]",
            "--workers",
            "2",
        ]
    )
    assert len(table["runs"]) == 4 + 2 and table["win_rate"]["all"]["n"] == 2


def test_dreamfl_overlays_reach_the_dreamfl_runs_only(monkeypatch, tmp_path) -> None:
    """A control judge or a reward preset changes DreamFL's runs, never the baseline's."""
    import itertools

    import dreamreward.lightning_cli
    from dreamreward.evaluate_dreamfl import _run

    calls = []
    monkeypatch.setattr(dreamreward.lightning_cli, "run_lightning", calls.append)
    overlays = {"dreamfl": ["judge.yaml"], "sds": ["sds.yaml"], "ranker": ["rank.yaml"]}
    common = ("base.yaml", overlays, ["--config", "short.yaml"], "cpu", None)
    for method in ("dreamfl", "sds", "ranker"):
        job = {"prompt": "a red cube", "seed": 1, "method": method, "dir": str(tmp_path / method)}
        _run(job, *common)
    files = [[b for a, b in itertools.pairwise(c) if a == "--config"] for c in calls]
    assert files == [
        ["base.yaml", "judge.yaml", "short.yaml"],
        ["base.yaml", "sds.yaml", "short.yaml"],
        ["base.yaml", "rank.yaml", "short.yaml"],
    ]
    # each run records what it was made with; a finished run made otherwise is not reused
    recorded = json.loads((tmp_path / "dreamfl" / "run_args.json").read_text())
    assert recorded[:4] == ["--config", "base.yaml", "--config", "judge.yaml"]
    from dreamreward.evaluate_dreamfl import _check_reusable

    job = {"prompt": "a red cube", "seed": 1, "method": "dreamfl", "dir": str(tmp_path / "dreamfl")}
    _check_reusable(job, common[:3])  # the same setup: fine
    other = {**overlays, "dreamfl": []}
    with pytest.raises(ValueError, match="holds a run made with .*use another --out"):
        _check_reusable(job, ("base.yaml", other, ["--config", "short.yaml"]))
    config = str(ROOT / "configs" / "dreamfl" / "primitives.yaml")
    with pytest.raises(FileNotFoundError, match="no config at nope.yaml"):
        main(["evaluate-dreamfl", "--dreamfl_config", config, "--dreamfl_overlays", "[nope.yaml]"])
    with pytest.raises(FileNotFoundError, match="no config at gone.yaml"):
        main(["evaluate-dreamfl", "--dreamfl_config", config, "--methods", "{ranker: [gone.yaml]}"])
    for bad in ("{sds: [a.yaml]}", "{'a/b': [a.yaml]}"):
        with pytest.raises(ValueError, match="not a usable method name"):
            main(["evaluate-dreamfl", "--dreamfl_config", config, "--methods", bad])


def test_every_method_is_paired_with_sds_and_reward_hacking_is_counted() -> None:
    def row(seed, method, oracle, reward):
        return {"prompt": "a red cube", "seed": seed, "method": method, "groups": ["train"],
                "oracle": oracle, "reward": reward}  # fmt: skip

    rows = [row(0, "sds", 0.6, 1.0), row(1, "sds", 0.5, 1.0)]
    rows += [row(0, "dreamfl", 0.7, 2.0), row(1, "dreamfl", 0.4, 2.0)]  # seed 1: hacked
    rows += [row(0, "ranker", 0.9, 0.5), row(1, "ranker", 0.6, 0.5)]
    table = summarise_runs(rows, ["dreamfl", "sds", "ranker"])
    assert set(table["versus_sds"]) == {"dreamfl", "ranker"}
    assert table["win_rate"] == table["versus_sds"]["dreamfl"]["win_rate"]
    assert table["versus_sds"]["ranker"]["win_rate"]["all"]["mean"] == pytest.approx(1.0)
    assert table["versus_sds"]["ranker"]["oracle_gain"]["all"]["mean"] == pytest.approx(0.2)
    hacking = table["versus_sds"]["dreamfl"]["reward_hacking"]
    assert hacking == {"runs": 1, "of": 2, "pairs": [{"prompt": "a red cube", "seed": 1}]}
    assert table["versus_sds"]["ranker"]["reward_hacking"]["runs"] == 0
    text = format_table(table)
    assert "| ranker | all | 2 |" in text and "ranker win-rate over SDS" in text
    assert "reward hacking) in 1 of 2 paired runs" in text


def test_per_prompt_table_keeps_each_seed() -> None:
    def row(prompt, seed, method, oracle):
        return {"prompt": prompt, "seed": seed, "method": method, "groups": ["train"],
                "oracle": oracle}  # fmt: skip

    rows = [row("a red cube", 0, "sds", 0.2), row("a red cube", 1, "sds", 0.4)]
    rows += [row("a red cube", 0, "dreamfl", 0.6), row("a red cube", 1, "dreamfl", 0.0)]
    rows += [row("a blue cone", 0, "sds", 0.5), row("a red cube", 0, "reference", 0.9)]
    table = summarise_runs(rows)
    cube, cone = table["per_prompt"]
    assert cube["prompt"] == "a red cube" and cone["prompt"] == "a blue cone"
    assert cube["oracle"]["sds"] == {"mean": pytest.approx(0.3), "by_seed": {"0": 0.2, "1": 0.4}}
    assert cube["oracle"]["dreamfl"]["mean"] == pytest.approx(0.3)
    assert cube["oracle"]["reference"]["by_seed"] == {"0": 0.9}
    assert set(cone["oracle"]) == {"sds"}  # no DreamFL run of it: left out, not zero
    text = format_table(table)
    assert "| prompt | dreamfl | sds | reference |" in text
    assert "| a red cube | 0.300 (0.60, 0.00) | 0.300 (0.20, 0.40) | 0.900 |" in text
    assert "| a blue cone | – | 0.500 | – |" in text


def test_rescore_oracle_judges_the_saved_views_by_the_current_rules(tmp_path) -> None:
    import torch

    from dreamreward.evaluate_dreamfl import rescore_oracle
    from dreamreward.render.export import save_image_grid
    from dreamreward.world.prompts import parse_prompt
    from dreamreward.world.views import default_cameras, ground_truth_views

    prompt = "a red cube on top of a blue sphere"
    truth = ground_truth_views(parse_prompt(prompt), default_cameras(64))
    save_image_grid(truth, tmp_path / "good" / "views.png", ncols=4)
    row = {"prompt": prompt, "oracle": 0.123, "degenerate": "empty"}  # stale values
    good = rescore_oracle(row, tmp_path / "good")
    assert good["oracle"] > 0.95 and "degenerate" not in good and good["oracle_from"] == "views.png"
    flat = torch.tensor([0.85, 0.12, 0.10]).expand(4, 64, 64, 3)
    save_image_grid(flat, tmp_path / "flat" / "views.png", ncols=4)
    bad = rescore_oracle({"prompt": prompt, "oracle": 0.9}, tmp_path / "flat")
    assert bad["oracle"] < 0.05 and bad["degenerate"] == "fills the frame"
    # free text and runs without views keep what they have
    assert (
        rescore_oracle({"prompt": "a photo of a dog", "oracle": 0.5}, tmp_path / "good")["oracle"]
        == 0.5
    )
    assert rescore_oracle(row, tmp_path / "missing") == row
    # a run made today is rescored from the views it was scored on, not from the picture
    save_image_grid(flat, tmp_path / "good" / "eval_views.png", ncols=4)
    assert rescore_oracle(row, tmp_path / "good")["oracle_from"] == "eval_views.png"


def test_run_folders_are_unique_per_exact_prompt() -> None:
    """Prompts that one slug folds together ("a red cube" / "A red cube!", emoji-only
    prompts) get folders of their own: one run never overwrites another."""
    from dreamreward.render.export import file_slug, unique_slug

    folded = ["a red cube", "A red cube!", "🎲", "🧊"]
    assert len({file_slug(p) for p in folded}) == 2
    names = [unique_slug(p) for p in folded]
    assert len(set(names)) == 4
    assert names[0].startswith("a_red_cube_") and names[2].startswith("prompt_")
    assert unique_slug("a red cube") == names[0]  # stable: a rerun finds its folder

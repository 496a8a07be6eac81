"""The prior's commands: fit/test from its config, predict, build-multiview and sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dreamreward.cli import main
from dreamreward.pipelines.sampling import sample_views

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "mvdiffusion" / "primitives.yaml"


def test_config_fits_tests_and_exports(tmp_path):
    """The shipped recipe's config, shrunk: builds the render set, trains, exports, tests."""
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIG),
            "--data.path",
            str(tmp_path / "set"),
            "--data.build_num_groups",
            "4",
            "--data.batch_size",
            "2",
            "--data.test_prompts_per_split",
            "1",
            "--model.block_out_channels",
            "[16, 32]",
            "--model.attention_head_dim",
            "16",
            "--model.sample_steps",
            "2",
            "--trainer.max_steps",
            "2",
            "--trainer.val_check_interval",
            "2",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "runs"),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    log_dir = Path(cli.trainer.log_dir)
    assert (log_dir / "prior" / "prior.json").is_file()
    table = json.loads((log_dir / "mvdiffusion_eval.json").read_text())
    assert {k.split("/")[0] for k in table} == {"trained", "untrained", "reference"}
    assert (log_dir / "test_samples.png").is_file()


def test_build_multiview_and_sample_commands(tmp_path, capsys):
    main(["build-multiview", "--out", str(tmp_path / "set"), "--num_groups", "2"])
    info = json.loads((tmp_path / "set" / "build_info.json").read_text())
    assert info["num_groups"] == 2 and info["image_size"] == 32
    result = main(
        ["sample", "--prompt", "a red cube", "--out", str(tmp_path / "g.png"), "--steps", "2"]
    )
    assert Path(result["grid"]).is_file()
    assert 0 <= result["oracle"][0] <= 1


def test_sample_notes_a_degenerate_sample_instead_of_scoring_it(tmp_path, monkeypatch):
    """A prior that returns noise: no oracle number, a note saying why."""
    import torch

    import dreamreward.pipelines.sampling as sampling

    class NoisePrior:
        image_size, num_views = 32, 4

        def sample(self, prompts, cameras, generator=None, **kwargs):
            return torch.rand(len(prompts) * 4, 3, 32, 32, generator=generator)

    monkeypatch.setattr(sampling, "load_prior", lambda path: NoisePrior())
    result = sampling.sample_views("a red cube", out=str(tmp_path / "n.png"), num_samples=2)
    assert result["oracle"] == [None, None]
    assert result["degenerate"] == ["noise", "noise"]
    free = sampling.sample_views("a photo of a dog", out=str(tmp_path / "d.png"))
    assert "oracle" not in free  # free text: no ground truth, no number
    assert free["degenerate"] == ["noise"]


def test_sample_rejects_empty_prompt_and_missing_prior(tmp_path):
    with pytest.raises(ValueError, match="--prompt is empty"):
        main(["sample", "--prompt", "  "])
    with pytest.raises(FileNotFoundError, match="not a saved multi-view prior"):
        main(["sample", "--prompt", "a red cube", "--prior", str(tmp_path)])
    # checked before the prior is loaded or anything is sampled
    for args, message in (
        (["--steps", "-5"], "--steps must be >= 1"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--out", str(tmp_path / "x.txt")], "--out must name a .png file"),
    ):
        with pytest.raises(ValueError, match=message):
            main(["sample", "--prompt", "a red cube", "--prior", str(tmp_path), *args])
    with pytest.raises(ValueError, match="--guidance_scale must be a finite number"):
        sample_views("a red cube", prior=str(tmp_path), guidance_scale=float("nan"))

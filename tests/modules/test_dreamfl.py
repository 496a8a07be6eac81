"""DreamFLModule on tiny priors and geometry: stages, reward term, results, resume."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

import _dreamfl_tiny
from _callbacks import StopAt
from _dreamfl_tiny import fit, tiny_dreamfl
from _guidance_toys import CameraJudge, Redness
from _tiny_prior import tiny_prior
from dreamreward.data.steps import OptimizationSteps
from dreamreward.guidance import RewardGuidance
from dreamreward.modules.two_stage_settings import AssetOptimization, MeshStage
from dreamreward.render.dmtet import DMTetGeometry


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_both_stages_train_and_export(tmp_path) -> None:
    module = tiny_dreamfl()
    trainer = fit(module, tmp_path, 4)
    assert module.global_step == 4 and module.asset.has_mesh
    metrics = trainer.callback_metrics
    assert "train/reward" in metrics and torch.isfinite(metrics["train/loss"])
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["method"] == "dreamfl" and result["prompt"] == "a red cube"
    assert 0 <= result["oracle"] <= 1 and "reward" in result
    assert 0 < result["nerf_seconds"] < result["fit_seconds"]
    assert result["mesh_seconds"] > 0
    assert 0 < result["nerf_process_peak_rss_mb"] <= result["process_peak_rss_mb"]
    for name in ("mesh.glb", "mesh.obj", "turntable.gif", "views.png", "eval_views.png"):
        assert (tmp_path / name).is_file()
    # the scored views at eval_resolution; the picture for people larger, over the ground truth
    from PIL import Image

    from dreamreward.render.export import read_scored_views

    scored, source = read_scored_views(tmp_path)
    assert source == "eval_views.png" and scored.shape == (4, 16, 16, 3)
    assert Image.open(tmp_path / "views.png").size == (4 * 24 + 5 * 2, 2 * 24 + 3 * 2)
    # frozen guides are rebuilt, not saved
    assert not any(p.requires_grad for p in module.guidance.parameters())


def test_baseline_has_no_reward_term(tmp_path) -> None:
    module = tiny_dreamfl(reward=False)
    trainer = fit(module, tmp_path, 2)
    assert "train/reward" not in trainer.callback_metrics
    assert json.loads((tmp_path / "result.json").read_text())["method"] == "sds"


def test_reward_is_logged_only_on_steps_that_score(tmp_path) -> None:
    module = tiny_dreamfl()
    module.reward.start_step = 10  # after the run's 2 steps
    trainer = fit(module, tmp_path, 2)
    metrics = trainer.callback_metrics
    assert "train/reward" not in metrics and float(metrics["train/reward_weight"]) == 0.0


def test_nerf_upscale_switches_the_stage_one_resolution(tmp_path) -> None:
    module = tiny_dreamfl(
        nerf_steps=3, nerf_upscale_step=2, nerf_upscale_resolution=12, mesh_resolution=10
    )
    sizes = []
    render = module.render_training_views

    def recording_render():
        out = render()
        sizes.append(out.renders.shape[-1])  # the side of the renders the guidance saw
        # the cameras the reward term receives are those of the renders
        assert (out.cameras.width, out.cameras.height) == tuple(out.renders.shape[-2:])
        assert len(out.cameras) == out.renders.shape[:2].numel()  # (1, V, 3, H, W)
        return out

    module.render_training_views = recording_render
    fit(module, tmp_path, 4)
    assert sizes == [8, 8, 12, 10]  # NeRF 8, NeRF upscaled to 12, then the mesh stage's 10
    with pytest.raises(ValueError, match="nerf_upscale_step 3 must lie inside stage 1"):
        tiny_dreamfl(nerf_steps=3, nerf_upscale_step=3)


def test_a_camera_judge_reaches_the_reward_term_and_needs_an_eval_reward(tmp_path) -> None:
    with pytest.raises(ValueError, match="set eval_reward"):
        tiny_dreamfl(RewardGuidance(CameraJudge()))
    module = tiny_dreamfl()  # the eval reward is Redness, the guide is a camera judge
    judge = CameraJudge()
    module.reward.judge = judge.as_frozen_guide()
    module.reward.start_step = 0
    fit(module, tmp_path, 2)
    assert judge.camera_counts == [4, 4]


def test_empty_prompt_is_refused() -> None:
    with pytest.raises(ValueError, match="prompt is empty"):
        tiny_dreamfl(prompt="   ")


def test_a_primitives_prior_refuses_free_text_and_an_open_prior_takes_it(monkeypatch) -> None:
    prior = tiny_prior()
    prior.prompt_domain = "primitives"  # as the shipped prior.json and MVDiffusionModule say
    monkeypatch.setattr(_dreamfl_tiny, "tiny_prior", lambda: prior)  # tiny_dreamfl's
    with pytest.raises(ValueError, match=r"'a red dragon' is outside .*unknown word"):
        tiny_dreamfl(prompt="a red dragon")
    assert tiny_dreamfl(prompt="a small green cone").scene is not None
    prior.prompt_domain = None  # an open-domain prior (MVDream): free text, no oracle score
    assert tiny_dreamfl(prompt="a red dragon").scene is None


def test_resume_from_a_checkpoint_is_exact(tmp_path) -> None:
    straight = tiny_dreamfl()
    fit(straight, tmp_path / "a", 5)
    ckpt = tmp_path / "mid.ckpt"
    first = tiny_dreamfl()
    fit(first, tmp_path / "b", 5, callbacks=[StopAt(3, ckpt)])
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert not any(k.startswith(("guidance.", "reward.", "eval_reward_model.")) for k in state)
    resumed = tiny_dreamfl()
    trainer = L.Trainer(
        default_root_dir=tmp_path / "c",
        max_steps=5,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(resumed, datamodule=OptimizationSteps(steps_per_epoch=3), ckpt_path=ckpt)
    ref, got = straight.state_dict(), resumed.state_dict()
    for key in ref:
        assert torch.equal(ref[key], got[key]), f"{key} differs after resume"


def test_resume_with_another_prompt_or_geometry_is_refused(tmp_path) -> None:
    ckpt = tmp_path / "mid.ckpt"
    fit(tiny_dreamfl(), tmp_path / "a", 3, callbacks=[StopAt(2, ckpt)])
    other_prompt = tiny_dreamfl(prompt="a blue cube")
    with pytest.raises(ValueError, match="prompt: 'a red cube' in the checkpoint, 'a blue cube'"):
        fit(other_prompt, tmp_path / "b", 3, ckpt_path=ckpt)
    other_grid = tiny_dreamfl(dmtet=DMTetGeometry(grid_resolution=6))
    with pytest.raises(ValueError, match=r"dmtet\.sdf: shape"):
        fit(other_grid, tmp_path / "c", 3, ckpt_path=ckpt)
    baseline = tiny_dreamfl(reward=False)
    with pytest.raises(ValueError, match="is a dreamfl run, this config is sds"):
        fit(baseline, tmp_path / "d", 3, ckpt_path=ckpt)
    every_other = tiny_dreamfl()
    every_other.reward.every = 2
    with pytest.raises(ValueError, match=r"reward term \{'judge': 'Redness', 'every': 1\}"):
        fit(every_other, tmp_path / "e", 3, ckpt_path=ckpt)


def test_resume_check_names_keys_on_one_side_only() -> None:
    from dreamreward.modules.resume_check import check_resume_matches

    module = torch.nn.Linear(2, 2)
    checkpoint = {"state_dict": {"weight": torch.zeros(2, 2), "extra": torch.zeros(1)}}
    with pytest.raises(ValueError, match=r"in the checkpoint only: extra(.|\n)*config only: bias"):
        check_resume_matches(module, checkpoint, [])
    check_resume_matches(module, checkpoint, [], ignore_prefixes=("extra", "bias"))


def test_configs_resolve(capsys) -> None:
    from pathlib import Path

    import yaml

    from dreamreward.cli import main

    root = Path(__file__).resolve().parents[2] / "configs" / "dreamfl"
    for overlay in (None, "primitives_sds.yaml", "presets/ground_truth_judge.yaml"):
        extra = ["--config", str(root / overlay)] if overlay else []
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(root / "primitives.yaml"), *extra, "--print_config"])
        assert exit_info.value.code == 0
        model = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
        assert model["guidance"]["class_path"].endswith("ScoreDistillation")
        assert (model["reward"] is None) == (overlay == "primitives_sds.yaml")
        if overlay == "presets/ground_truth_judge.yaml":
            # the control swaps the judge only; the results are still scored by Reward3D
            assert model["reward"]["init_args"]["judge"]["class_path"].endswith("GroundTruthJudge")
            assert model["reward"]["init_args"]["grad_fraction"] == 0.3
            assert model["eval_reward"]["class_path"].endswith("ShippedReward3D")


@pytest.mark.parametrize(
    "overlays",
    [[], ["mvdream_sd21_lowmem.yaml"]]
    + [
        [f"presets/{p}.yaml"]
        for p in (
            "conservative",
            "aggressive",
            "paper",
            "grad_fraction",
            "every_other_step",
            "augmented_reward",
            "blurred_reward",
            "smoothed_reward",
            "grad_fraction_3",
            "start_step_200",
            "reward_on_render",
        )
    ],
)
def test_full_scale_configs_resolve(overlays, capsys) -> None:
    from pathlib import Path

    import yaml

    from dreamreward.cli import main

    root = Path(__file__).resolve().parents[2] / "configs" / "dreamfl"
    argv = ["fit", "--config", str(root / "mvdream_sd21.yaml")]
    for overlay in overlays:
        argv += ["--config", str(root / overlay)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--print_config"])
    assert exit_info.value.code == 0
    model = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    reward = model["reward"]["init_args"]
    # a preset changes the formulation, never the reward model it is applied to
    assert reward["judge"]["class_path"].endswith("OfficialReward3D")
    assert model["guidance"]["init_args"]["prior"]["class_path"].endswith("MVDreamPrior")
    if overlays == ["presets/paper.yaml"]:
        assert reward["objective"] == "linear" and reward["weighting"] == "constant"
    if overlays == ["presets/aggressive.yaml"]:
        assert (reward["weight"], reward["start_step"]) == (0.3, 1001)
    if overlays == ["presets/grad_fraction_3.yaml"]:  # the sensitivity table's settings
        assert (reward["weighting"], reward["grad_fraction"]) == ("grad_fraction", 3.0)
    if overlays == ["presets/start_step_200.yaml"]:
        assert reward["start_step"] == 200
    if overlays == ["presets/reward_on_render.yaml"]:  # timesteps are >= 1: never x_hat
        assert reward["straight_through_max_t"] == 0
    if overlays == ["mvdream_sd21_lowmem.yaml"]:
        assert model["nerf_upscale_step"] is None
        # the overlay changes one field of the group; the base config's others stay
        assert model["mesh_stage"]["supersample"] == 1
        assert model["mesh_stage"]["isosurface_threshold"] == 10.0
    else:
        assert model["mesh_stage"]["supersample"] == 2
    assert model["export"]["turntable_frames"] == 60
    assert reward["every"] == (2 if overlays == ["presets/every_other_step.yaml"] else 1)
    if overlays == ["presets/augmented_reward.yaml"]:
        assert reward["augmentation"]["class_path"].endswith("ViewAugmentation")
        assert reward["augmented_copies"] == 4
    elif overlays == ["presets/blurred_reward.yaml"]:
        assert reward["augmentation"]["init_args"]["blur_sigma"] == 2.0
        assert reward["augmented_copies"] == 1
    elif overlays == ["presets/smoothed_reward.yaml"]:  # noise only: no zoom, shift or softening
        augmentation = reward["augmentation"]["init_args"]
        assert (augmentation["noise_std"], augmentation["max_zoom"]) == (0.05, 1.0)
        assert augmentation["soften_probability"] == 0.0 and reward["augmented_copies"] == 8
    else:
        assert reward["augmentation"] is None


def test_missing_full_scale_weights_name_the_path(tmp_path) -> None:
    from pathlib import Path

    from dreamreward.cli import main

    config = Path(__file__).resolve().parents[2] / "configs" / "dreamfl" / "mvdream_sd21.yaml"
    missing = tmp_path / "nothing.pt"
    with pytest.raises(FileNotFoundError, match=f"no MVDream weights at {missing}"):
        main(
            [
                "fit",
                "--config",
                str(config),
                "--trainer.accelerator",
                "cpu",
                "--trainer.logger",
                "false",
                f"--model.guidance.init_args.prior.init_args.path={missing}",
                "--model.dmtet.init_args.grid_resolution=8",  # not 12.6 M tets on a CPU
            ]
        )


def test_bad_stage_settings_are_refused_before_training() -> None:
    for kw, message in (
        ({"nerf_steps": -5}, "model.nerf_steps must be a finite number >= 0, got -5"),
        ({"mesh_resolution": 0}, "model.mesh_resolution must be an integer >= 1, got 0"),
        ({"eval_resolution": 0}, "model.eval_resolution must be an integer >= 1"),
    ):
        with pytest.raises(ValueError, match=message):
            tiny_dreamfl(**kw)
    # the typed groups check themselves, naming the field's place in the config
    with pytest.raises(ValueError, match="model.optimization.lr_grid must be a finite number > 0"):
        AssetOptimization(lr_grid=float("nan"))
    with pytest.raises(ValueError, match="model.mesh_stage.isosurface_threshold must be a finite"):
        MeshStage(isosurface_threshold=float("inf"))


def test_a_field_that_misses_the_threshold_gets_the_right_advice() -> None:
    """A density above the threshold everywhere is not told to lower the threshold."""
    with pytest.raises(
        RuntimeError, match="fills the whole grid.*raise model.mesh_stage.isosurface"
    ):
        tiny_dreamfl(mesh_stage=MeshStage(isosurface_threshold=1e-12)).asset.mesh()
    with pytest.raises(RuntimeError, match="lower model.mesh_stage.isosurface_threshold or raise"):
        tiny_dreamfl(mesh_stage=MeshStage(isosurface_threshold=1e9)).asset.mesh()
    # Through the module, the message also gives the value of nerf_steps it advises raising.
    with pytest.raises(RuntimeError, match=r"or raise model.nerf_steps.*model.nerf_steps=\d+"):
        tiny_dreamfl(mesh_stage=MeshStage(isosurface_threshold=1e9)).current_mesh()


def test_a_ground_truth_judge_refuses_free_text_when_the_run_is_built() -> None:
    from dreamreward.world.reference_judge import GroundTruthJudge

    class RednessSource:  # the run's scorer: any source with load()
        def load(self):
            return Redness()

    with pytest.raises(ValueError, match="GroundTruthJudge only judges primitives-world"):
        tiny_dreamfl(
            RewardGuidance(GroundTruthJudge()),
            prompt="a photo of a dog",
            eval_reward=RednessSource(),
        )

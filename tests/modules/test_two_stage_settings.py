"""The typed argument groups of the two-stage asset modules, and configs from before them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from _dreamfl_tiny import fit, tiny_dreamfl
from dreamreward.config_compat import translate_legacy_args
from dreamreward.modules.two_stage_settings import (
    MOVED_ARGUMENTS,
    AssetExport,
    AssetOptimization,
    MeshStage,
    group_legacy_hparams,
    settings_group,
)

ROOT = Path(__file__).resolve().parents[2]


def test_groups_refuse_bad_values_naming_the_config_field() -> None:
    for make, message in (
        (lambda: AssetOptimization(lr_mlp=0.0), "model.optimization.lr_mlp must be a finite"),
        (lambda: MeshStage(supersample=0), "model.mesh_stage.supersample must be an integer"),
        (lambda: MeshStage(laplacian_weight=-1.0), "model.mesh_stage.laplacian_weight .* >= 0"),
        (lambda: AssetExport(formats=("fbx",)), r"model.export.formats has \['fbx'\]"),
        (lambda: AssetExport(turntable_size=0), "model.export.turntable_size must be"),
    ):
        with pytest.raises(ValueError, match=message):
            make()
    assert AssetExport(formats=["obj"]).formats == ("obj",)  # YAML lists become the tuple


def test_settings_group_reads_a_saved_dict_and_names_unknown_fields() -> None:
    assert settings_group(MeshStage, {"supersample": 3}, "mesh_stage") == MeshStage(supersample=3)
    with pytest.raises(TypeError, match=r"model.mesh_stage: unknown field\(s\) \['lr_grid'\]"):
        settings_group(MeshStage, {"lr_grid": 1.0}, "mesh_stage")
    with pytest.raises(TypeError, match="model.export must be a AssetExport"):
        settings_group(AssetExport, 3, "export")


def test_checkpoints_hold_the_groups_as_plain_dicts(tmp_path) -> None:
    """``weights_only`` loading and hparams.yaml need no project classes; the dicts rebuild
    the same groups."""
    module = tiny_dreamfl(mesh_stage=MeshStage(isosurface_threshold=1.0, supersample=3))
    assert module.hparams["mesh_stage"]["supersample"] == 3
    assert module.hparams["export"]["formats"] == ["glb", "obj"]
    trainer = fit(module, tmp_path, steps=1)
    path = tmp_path / "one.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["hyper_parameters"]
    rebuilt = tiny_dreamfl(**{k: saved[k] for k in ("optimization", "mesh_stage", "export")})
    assert (rebuilt.mesh_stage, rebuilt.export) == (module.mesh_stage, module.export)


def test_a_pre_group_checkpoint_resumes_and_its_flat_settings_are_compared(tmp_path) -> None:
    module = tiny_dreamfl()
    trainer = fit(module, tmp_path / "a", steps=2)
    path = tmp_path / "flat.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    # rewrite the hyper-parameters as the previous release saved them
    hparams = checkpoint["hyper_parameters"]
    for group in ("optimization", "mesh_stage", "export"):
        saved = hparams.pop(group)
        legacy = {flat: saved[field] for flat, (g, field) in MOVED_ARGUMENTS.items() if g == group}
        hparams.update(legacy)
    torch.save(checkpoint, path)
    fit(tiny_dreamfl(), tmp_path / "b", steps=3, ckpt_path=path)  # same settings: resumes
    hparams["isosurface_threshold"] = 2.5
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=r"mesh_stage.isosurface_threshold: 2.5 in the checkpoint"):
        fit(tiny_dreamfl(), tmp_path / "c", steps=3, ckpt_path=path)


def test_group_legacy_hparams_keeps_a_grouped_value_over_a_flat_one() -> None:
    hparams = {"lr_grid": 0.5, "optimization": {"lr_grid": 0.1}, "turntable_size": 64}
    assert group_legacy_hparams(hparams) == ["lr_grid", "turntable_size"]
    assert hparams == {"optimization": {"lr_grid": 0.1}, "export": {"turntable_size": 64}}


def _printed_model(capsys, argv: list[str]) -> dict:
    from dreamreward.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]


def test_a_pre_group_config_and_flags_still_run_with_a_warning(tmp_path, capsys) -> None:
    config = yaml.safe_load((ROOT / "configs" / "render" / "fit_mesh.yaml").read_text())
    init_args = config["model"]["init_args"]
    init_args.pop("mesh_stage")
    init_args.update(isosurface_threshold=3.0, lr_grid=0.02, turntable_frames=5)
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(config))
    argv = ["fit", "--config", str(old), "--model.init_args.mesh_supersample", "3"]
    moved = r"old.yaml: model settings moved \(lr_grid -> optimization.lr_grid"
    with pytest.warns(FutureWarning, match=moved):
        model = _printed_model(capsys, argv)
    assert model["mesh_stage"]["isosurface_threshold"] == 3.0
    assert model["mesh_stage"]["supersample"] == 3
    assert model["mesh_stage"]["normal_consistency_weight"] == 0.05  # the module's default
    assert model["optimization"] == {"lr_grid": 0.02, "lr_mlp": 1e-3, "lr_dmtet": 1e-3}
    assert model["export"]["turntable_frames"] == 5
    assert model["export"]["turntable_elevation_deg"] == 20.0


def test_translation_leaves_other_models_and_current_configs_alone() -> None:
    reward_config = str(ROOT / "configs" / "reward3d" / "primitives.yaml")
    args = ["fit", "--config", reward_config, "--model.init_args.lr_grid", "1"]
    assert translate_legacy_args(args) == args  # not an asset module: jsonargparse decides
    current = ["fit", "--config", str(ROOT / "configs" / "dreamfl" / "primitives.yaml")]
    assert translate_legacy_args(current) == current
    with pytest.warns(FutureWarning, match="--model.turntable_size is now --model.export"):
        assert translate_legacy_args([*current, "--model.turntable_size=64"])[-1] == (
            "--model.export.turntable_size=64"
        )


def test_the_reward_terms_old_judge_key_still_reads(tmp_path, capsys) -> None:
    """``reward.init_args.reward`` (the judge inside the reward term) is ``judge`` now."""
    root = ROOT / "configs" / "dreamfl"
    preset = yaml.safe_load((root / "presets" / "ground_truth_judge.yaml").read_text())
    term = preset["model"]["init_args"]["reward"]["init_args"]
    term["reward"] = term.pop("judge")
    old = tmp_path / "old_preset.yaml"
    old.write_text(yaml.safe_dump(preset))
    argv = ["fit", "--config", str(root / "primitives.yaml"), "--config", str(old)]
    with pytest.warns(FutureWarning, match="reward.init_args.reward -> reward.init_args.judge"):
        model = _printed_model(capsys, argv)
    assert model["reward"]["init_args"]["judge"]["class_path"].endswith("GroundTruthJudge")
    flag = "--model.reward.init_args.reward.class_path=GroundTruthJudge"
    with pytest.warns(FutureWarning, match="is now --model.reward.init_args.judge.class_path"):
        assert translate_legacy_args(["fit", flag])[-1] == (
            "--model.reward.init_args.judge.class_path=GroundTruthJudge"
        )

"""Reward3DModule: fine-tuning modes, baselines, metrics, export/load, the CLI job, bad input."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import datasets
import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from _reward3d_tiny import tiny_reward
from dreamreward.data.preference import PreferenceDataModule, pairs_as_asset_batch
from dreamreward.data.schema import PREFERENCE_FEATURES, synthetic_rows
from dreamreward.models.reward3d import (
    CheckpointMismatchError,
    CompactBackbone,
    Reward3D,
)
from dreamreward.models.reward3d.export import load_reward3d, save_reward3d
from dreamreward.modules.frozen_weights import FROZEN_DIGESTS, frozen_parameter_names
from dreamreward.modules.preference_metrics import (
    GroupedAccuracy,
    PreferenceMetrics,
    pairwise_correct,
    pairwise_logistic_loss,
)
from dreamreward.modules.reward3d import Reward3DModule
from dreamreward.world.prompt_edits import edit_kind_odds, edited_prompts, weighted_order
from dreamreward.world.prompts import describe


@pytest.fixture(scope="module")
def learnable_set(tmp_path_factory) -> str:
    """Random views whose brightness follows the rating: a preference a model can learn."""
    rows = synthetic_rows(num_prompts=12, assets_per_prompt=4, image_size=16, novel_prompts=2)
    for row in rows:
        level = 0.15 + 0.7 * row["ratings"]["overall"] / 7.0
        rng = np.random.default_rng(len(row["prompt_id"]) + row["rank"])
        row["views"] = [
            Image.fromarray(
                np.clip(255 * (level + 0.05 * rng.standard_normal((16, 16, 3))), 0, 255).astype(
                    np.uint8
                )
            )
            for _ in range(4)
        ]
    columns = {name: [r[name] for r in rows] for name in PREFERENCE_FEATURES}
    path = tmp_path_factory.mktemp("pref") / "ds"
    datasets.Dataset.from_dict(columns, features=PREFERENCE_FEATURES).save_to_disk(str(path))
    return str(path)


def datamodule(path: str, grouping: str = "prompt", batch_size: int = 4) -> PreferenceDataModule:
    return PreferenceDataModule(
        path, val_fraction=0.2, test_fraction=0.2, batch_size=batch_size, grouping=grouping
    )


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    return L.Trainer(**(defaults | kwargs))


# ------------------------------------------------------------------------------- metrics
def test_pairwise_loss_accuracy_and_ties():
    better, worse = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 3.0])
    assert pairwise_correct(better, worse).tolist() == [1.0, 0.5, 0.0]
    expected = np.mean([math.log1p(math.exp(-d)) for d in (1.0, 0.0, -2.0)])
    assert pairwise_logistic_loss(better, worse).item() == pytest.approx(expected, rel=1e-6)


def test_grouped_accuracy_and_calibration():
    grouped = GroupedAccuracy(["wrong_color", "wrong_shape"])
    grouped.update(torch.tensor([1.0, 0.0, 1.0, 1.0]), ["wrong_color"] * 2 + ["x", "wrong_shape"])
    assert grouped.compute() == {
        "wrong_color": pytest.approx(0.5),
        "wrong_shape": pytest.approx(1.0),
        "other": pytest.approx(1.0),
    }
    metrics = PreferenceMetrics(["a"], ["overall"], calibration_bins=10)
    # Always right with p = sigmoid(5) ~ 0.993: calibration error ~ 1 - 0.993.
    metrics.update(torch.full((8,), 5.0), torch.zeros(8), ["a"] * 8, ["overall"] * 8)
    out = metrics.compute()
    assert out["accuracy"] == 1.0 and out["pairs"] == 8
    assert out["ece"] == pytest.approx(1 - torch.sigmoid(torch.tensor(5.0)).item(), abs=1e-4)
    assert out["accuracy/defect/a"] == 1.0 and out["accuracy/axis/overall"] == 1.0


# ------------------------------------------------------------------------- data layouts
def test_prompt_groups_give_the_same_pairs_and_loss_as_pair_batches(learnable_set, vocab_dir):
    torch.manual_seed(0)
    module = Reward3DModule(tiny_reward(vocab_dir), finetune="full", baselines=False).eval()
    losses = {}
    for grouping in ("pair", "prompt"):
        dm = datamodule(learnable_set, grouping, batch_size=100)
        dm.setup("fit")
        batch = pairs_as_asset_batch(next(iter(dm.val_dataloader())))
        with torch.no_grad():
            r = module(batch)["reward3d"]
        key = sorted(zip(batch["prompt_id"], batch["defect"], batch["axis"], strict=True))
        losses[grouping] = (
            pairwise_logistic_loss(r[batch["better_index"]], r[batch["worse_index"]]),
            key,
        )
        if grouping == "prompt":  # each asset once
            assert len(batch["views"]) < 2 * len(batch["better_index"])
    assert losses["pair"][1] == losses["prompt"][1]
    torch.testing.assert_close(losses["pair"][0], losses["prompt"][0])


# ---------------------------------------------------------------------- fine-tuning modes
def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, after) -> set[str]:
    return {k for k in before if k in after and not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("mode", ["lora", "freeze_bottom", "head_only", "full"])
def test_finetune_modes_train_only_their_parameters(mode, learnable_set, vocab_dir, tmp_path):
    torch.manual_seed(0)
    module = Reward3DModule(
        tiny_reward(vocab_dir), finetune=mode, freeze_fraction=0.5, lr=1e-2, head_lr=1e-2
    )
    base_before = _snapshot(module.reward)
    ref_before = _snapshot(module.reference_backbone) if module.baselines else {}
    trainer(tmp_path).fit(module, datamodule(learnable_set))
    changed = _changed(base_before, _snapshot(module.reward))
    assert any("head" in k for k in changed)
    backbone_changed = {k for k in changed if ".head." not in k and not k.startswith("head")}
    if mode == "lora":
        # Base weights are untouched; only the low-rank matrices move.
        assert backbone_changed and all(".lora_" in k for k in backbone_changed)
    elif mode == "head_only":
        assert not backbone_changed
        assert not module.baselines  # head-only is its own baseline
    elif mode == "freeze_bottom":
        assert backbone_changed
        assert not any("blocks.0." in k or "layer.0." in k for k in backbone_changed)
        assert not any("embeddings" in k or "patch_embed" in k for k in backbone_changed)
    else:
        assert any("blocks.0." in k for k in backbone_changed)
    if module.baselines:  # the zero-shot reference never moves
        assert not _changed(ref_before, _snapshot(module.reference_backbone))


def test_training_learns_a_learnable_preference(learnable_set, vocab_dir, tmp_path):
    torch.manual_seed(0)
    module = Reward3DModule(tiny_reward(vocab_dir), finetune="lora", lr=3e-3, head_lr=3e-3)
    dm = datamodule(learnable_set)
    trainer(tmp_path, max_steps=60, limit_val_batches=0).fit(module, dm)
    results = trainer(tmp_path).test(module, datamodule=dm, verbose=False)
    assert results[0]["test/accuracy"] >= 0.8
    assert results[0]["novel/accuracy"] >= 0.8
    # Both baselines are reported beside the trained model.
    assert "test/zero_shot/accuracy" in results[0]
    assert "novel/head_only/accuracy" in results[0]


# --------------------------------------------------------------------------- export/load
@pytest.mark.parametrize("mode", ["lora", "full"])
def test_export_round_trip_scores_identically(mode, learnable_set, vocab_dir, tmp_path):
    torch.manual_seed(0)
    module = Reward3DModule(tiny_reward(vocab_dir), finetune=mode, lr=1e-2, baselines=False)
    trainer(tmp_path, max_steps=2).fit(module, datamodule(learnable_set))
    folder = save_reward3d(module.model, tmp_path / "export", notes={"mode": mode})
    record = json.loads((folder / "reward3d.json").read_text())
    # A randomly initialised base cannot be rebuilt from files: even LoRA exports full weights.
    assert record["format"] == "full_weights"
    if mode == "lora":
        assert (folder / "adapter" / "adapter_config.json").is_file()
        assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    loaded = load_reward3d(folder)
    assert loaded.is_frozen_guide and not loaded.training
    assert type(loaded) is Reward3D  # merged: no peft wrapper left
    renders = torch.rand(2, 4, 16, 16, 3)
    labels = ["front", "side", "back", "side"]
    module.eval()
    with torch.no_grad():
        expected = module.reward.score(renders, ["a red cube", "a blue sphere"], labels)
        got = loaded.score(renders, ["a red cube", "a blue sphere"], labels)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_pretrained_lora_export_is_a_small_adapter_that_reloads_exactly(tmp_path):
    torch.manual_seed(0)
    reward = Reward3D(CompactBackbone(pretrained=True), mlp_hidden=32)
    module = Reward3DModule(reward, finetune="lora", lora_rank=2, baselines=False)
    with torch.no_grad():  # make every saved part non-trivial, as training would
        for p in module.model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    folder = save_reward3d(module.model, tmp_path / "export")
    assert json.loads((folder / "reward3d.json").read_text())["format"] == "lora_adapter"
    assert not (folder / "model.safetensors").exists()
    size = (folder / "adapter" / "adapter_model.safetensors").stat().st_size
    assert size < 0.3 * sum(p.numel() * 4 for p in reward.parameters())
    loaded = load_reward3d(folder)
    renders = torch.rand(1, 4, 64, 64, 3)
    labels = ["front", "side", "back", "overhead"]
    module.eval()
    with torch.no_grad():
        expected = module.reward.score(renders, ["a red cube"], labels)
        got = loaded.score(renders, ["a red cube"], labels)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # pickled weights in place of the safetensors file are refused, never unpickled
    adapter = folder / "adapter"
    torch.save({"x": torch.zeros(1)}, adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no adapter_model.safetensors"):
        load_reward3d(folder)


def test_load_reward3d_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="reward3d.json"):
        load_reward3d(tmp_path)
    (tmp_path / "reward3d.json").write_text("{not json")
    with pytest.raises(ValueError, match="malformed"):
        load_reward3d(tmp_path)
    (tmp_path / "reward3d.json").write_text(
        json.dumps({"format": "full_weights", "model": {"class_path": "os.system"}})
    )
    with pytest.raises(ValueError, match="refusing"):
        load_reward3d(tmp_path)
    (tmp_path / "reward3d.json").write_text(
        json.dumps(
            {
                "format": "full_weights",
                "model": {"class_path": "dreamreward.models.reward3d.nope.X"},
            }
        )
    )
    with pytest.raises(ValueError, match="cannot build"):
        load_reward3d(tmp_path)


def test_load_reward3d_names_mis_shaped_weights(vocab_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_reward3d(tiny_reward(vocab_dir), tmp_path / "export")
    state = load_file(str(folder / "model.safetensors"))
    state["head.fc3.weight"] = torch.zeros(2, 64)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"mis-shaped.*head\.fc3\.weight"):
        load_reward3d(folder)


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments_and_inputs(vocab_dir):
    with pytest.raises(ValueError, match="finetune"):
        Reward3DModule(tiny_reward(vocab_dir), finetune="everything")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="matches no"):
        Reward3DModule(tiny_reward(vocab_dir), lora_target_modules="nothing_named_so")
    for kw, message in (
        ({"lr": float("nan")}, "model.lr must be a finite number > 0, got nan"),
        ({"head_lr": 0.0}, "model.head_lr must be a finite number > 0"),
        ({"prompt_edit_weight": -1.0}, "model.prompt_edit_weight must be a finite number >= 0"),
        ({"warmup_steps": -1}, "model.warmup_steps must be >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            Reward3DModule(tiny_reward(vocab_dir), baselines=False, **kw)
    module = Reward3DModule(tiny_reward(vocab_dir), baselines=False)
    batch = {
        "views": torch.rand(2, 3, 3, 16, 16),
        "cameras": torch.eye(4).expand(2, 3, 4, 4),
        "asset_prompt": ["a", "b"],
    }
    with pytest.raises(ValueError, match="exactly 4 RGB views"):
        module(batch)


def test_nan_loss_stops_with_a_clear_message(learnable_set, vocab_dir, tmp_path):
    reward = tiny_reward(vocab_dir)
    with torch.no_grad():
        reward.head.fc3.bias.fill_(float("nan"))
    module = Reward3DModule(reward, finetune="head_only")
    with pytest.raises(FloatingPointError, match="non-finite Reward3D loss"):
        trainer(tmp_path).fit(module, datamodule(learnable_set))


def test_prompt_swap_term_reads_the_prompt(learnable_set, vocab_dir, tmp_path):
    torch.manual_seed(0)
    module = Reward3DModule(tiny_reward(vocab_dir), finetune="full", prompt_swap_weight=1.0).eval()
    dm = datamodule(learnable_set)
    dm.setup("fit")
    batch = pairs_as_asset_batch(next(iter(dm.train_dataloader())))
    rewards = module(batch, with_tokens=True)
    loss = module._prompt_swap_loss(batch, rewards)
    assert loss is not None and torch.isfinite(loss)
    # Its value is the pairwise loss of own-prompt vs next-prompt rewards.
    prompts = list(batch["asset_prompt"])
    distinct = list(dict.fromkeys(prompts))
    swapped = [distinct[(distinct.index(p) + 1) % len(distinct)] for p in prompts]
    images, ids, mask = module._inputs(batch, swapped)
    with torch.no_grad():
        r_swap = module.model(images, ids, mask).squeeze(-1)
    torch.testing.assert_close(
        loss.detach(), pairwise_logistic_loss(rewards["reward3d"].detach(), r_swap)
    )
    one_prompt = {**batch, "asset_prompt": [prompts[0]] * len(prompts)}
    assert module._prompt_swap_loss(one_prompt, rewards) is None
    trainer_ = trainer(tmp_path, max_steps=1, logger=True)
    trainer_.fit(module, dm)
    assert "train/prompt_swap_loss" in trainer_.logged_metrics


def test_resume_continues_the_schedule_and_weights_exactly(learnable_set, vocab_dir, tmp_path):
    """4 steps uninterrupted vs interrupted after step 2 and resumed from its checkpoint: same
    step and learning rate, and the same weights up to 2e-4 (the shuffle and dropout follow the
    epoch and step, not the process's RNG history; a residual difference of that size remains,
    cause not yet found: a restarted schedule or data order would differ far more)."""
    torch.set_num_threads(1)

    class StopAt(L.Callback):
        def __init__(self, step: int) -> None:
            self.step = step

        def on_train_batch_end(self, trainer_, *args) -> None:
            if trainer_.global_step >= self.step:
                trainer_.should_stop = True

    def run(root, stop=None, ckpt=None):
        torch.manual_seed(0)
        module = Reward3DModule(tiny_reward(vocab_dir), finetune="lora", warmup_steps=2)
        callbacks = [L.pytorch.callbacks.ModelCheckpoint(dirpath=root, save_last=True)]
        callbacks += [StopAt(stop)] if stop else []
        fit = trainer(
            root, max_steps=4, enable_checkpointing=True, callbacks=callbacks, limit_val_batches=0
        )
        fit.fit(module, datamodule(learnable_set), ckpt_path=ckpt)
        return module, fit

    straight, fit_a = run(tmp_path / "straight")
    _, interrupted = run(tmp_path / "split", stop=2)
    assert interrupted.global_step == 2
    # the checkpoint leaves the frozen pretrained weights out, each recorded by a digest, and
    # keeps the frozen layers drawn at random (peft's copies of the new layers and the head)
    saved = torch.load(tmp_path / "split" / "last.ckpt", weights_only=True)
    rebuilt = straight.rebuilt_frozen_parameters()
    assert rebuilt and not set(rebuilt) & set(saved["state_dict"])
    assert sorted(saved[FROZEN_DIGESTS]) == sorted(rebuilt)
    assert any(name.startswith("model.") for name in rebuilt)
    drawn = set(frozen_parameter_names(straight)) - set(rebuilt)
    assert any("original_module" in name for name in drawn)
    assert drawn <= set(saved["state_dict"])
    torch.manual_seed(123)  # a different RNG history must not matter
    resumed, fit_b = run(tmp_path / "split", ckpt=str(tmp_path / "split" / "last.ckpt"))
    assert fit_a.global_step == fit_b.global_step == 4
    assert fit_a.optimizers[0].param_groups[0]["lr"] == fit_b.optimizers[0].param_groups[0]["lr"]
    for (name, a), (_, b) in zip(
        straight.model.named_parameters(), resumed.model.named_parameters(), strict=True
    ):
        if a.requires_grad:
            torch.testing.assert_close(
                a, b, atol=1e-3, rtol=0, msg=lambda m, name=name: f"{name}: {m}"
            )
    # the checkpoint of another fine-tuning layout is refused, naming what differs
    other = Reward3DModule(tiny_reward(vocab_dir), finetune="lora", lora_rank=4, warmup_steps=2)
    with pytest.raises(ValueError, match="lora_rank: 8 in the checkpoint, 4 in the config"):
        trainer(tmp_path / "other", max_steps=5, limit_val_batches=0).fit(
            other, datamodule(learnable_set), ckpt_path=str(tmp_path / "split" / "last.ckpt")
        )
    # and so is one whose rebuilt frozen weights are not the ones the run trained on
    other_base = Reward3DModule(tiny_reward(vocab_dir, seed=1), finetune="lora", warmup_steps=2)
    with pytest.raises(ValueError, match="last.ckpt was saved without its frozen weights"):
        trainer(tmp_path / "other_base", max_steps=5, limit_val_batches=0).fit(
            other_base, datamodule(learnable_set), ckpt_path=str(tmp_path / "split" / "last.ckpt")
        )


@pytest.mark.filterwarnings("ignore:.*are truncated")
def test_prompt_edit_term_and_text_side_report(world_set, vocab_dir, tmp_path):
    """The edit term is a softmax over the true prompt, every kind of edit and another prompt
    of the batch, per correct asset; the text side (true prompt vs each edit kind, and an
    out-of-vocabulary prompt) is reported for every model and written to the eval table."""
    torch.manual_seed(0)
    module = Reward3DModule(tiny_reward(vocab_dir), finetune="full", prompt_edit_weight=1.0)
    module.eval()
    dm = datamodule(world_set)
    dm.setup("fit")
    batch = pairs_as_asset_batch(next(iter(dm.train_dataloader())))
    assert module._correct_assets(batch), "the batch has correct assets with scenes"
    rewards = module(batch, with_tokens=True)
    loss = module._prompt_edit_loss(batch, rewards)
    assert loss is not None and torch.isfinite(loss)
    no_scene = {**batch, "asset_scene": [""] * len(batch["views"])}
    assert module._prompt_edit_loss(no_scene, rewards) is None

    # Listwise: per correct asset, its own prompt (or a paraphrase) first, then one edit per
    # applicable kind and one other prompt of the batch; -log softmax of the first.
    seen: list[tuple[list[int], list[str]]] = []

    def true_prompt_wins(rewards_, batch_, assets, prompts, models=("reward3d",)):
        seen.append((assets, prompts))
        first = [i == 0 or assets[i - 1] != assets[i] for i in range(len(assets))]
        return {"reward3d": torch.tensor([10.0 if f else -10.0 for f in first])}

    module._rewards_for_prompts = true_prompt_wins  # type: ignore[method-assign]
    assert module._prompt_edit_loss(batch, rewards) < 1e-6
    assets, prompts = seen[0]
    correct = dict(module._correct_assets(batch))
    for a, scene in correct.items():
        listed = [p for b, p in zip(assets, prompts, strict=True) if b == a]
        n_edits = len(listed) - 1 - (len(correct) > 1)  # minus the true and the other prompt
        assert 1 <= n_edits <= len(edited_prompts(scene, random.Random(0), allow_novel=True))
        assert describe(scene) not in listed[1:]
    del module._rewards_for_prompts

    trainer_ = trainer(tmp_path, max_steps=2, logger=True, val_check_interval=2)
    trainer_.fit(module, dm)
    assert "train/prompt_edit_loss" in trainer_.logged_metrics
    logged = set(trainer_.logged_metrics)
    assert {"val/text_side/colour", "val/text_side/out of vocabulary"} <= logged
    kinds = [k for k in logged if k.startswith("val/text_side/")]
    mean = sum(float(trainer_.logged_metrics[k]) for k in kinds) / len(kinds)
    assert float(trainer_.logged_metrics["val/text_side_mean"]) == pytest.approx(mean)
    assert "val/zero_shot/text_side/colour" in logged
    trainer_.test(module, dm, verbose=False)
    held_out = module._test_results["test"]["reward3d"]
    assert 0.0 <= held_out["text_side/out of vocabulary"] <= 1.0
    # each correct asset counted once: one comparison per test prompt and kind
    assert held_out["text_side_n/out of vocabulary"] == len({p.prompt_id for p in dm.pairs["test"]})
    assert "Text side" in (Path(trainer_.log_dir) / "reward3d_eval.md").read_text()


def test_eval_table_lists_the_text_side(tmp_path):
    from dreamreward.modules.reward3d_report import write_eval_table

    results = {
        "test": {
            "reward3d": {"pairs": 10.0, "accuracy": 0.9, "ece": 0.01,
                         "text_side/colour": 0.75, "text_side_n/colour": 4.0},
            "zero_shot": {"pairs": 10.0, "accuracy": 0.5, "ece": 0.1,
                          "text_side/colour": 0.5, "text_side_n/colour": 4.0},
        }
    }  # fmt: skip
    write_eval_table(results, tmp_path)
    table = (tmp_path / "reward3d_eval.md").read_text()
    assert "| colour | test | 4 | 75.0% | 50.0% |" in table


@pytest.mark.filterwarnings("ignore:.*are truncated")
def test_crossed_edit_term_needs_image_and_prompt_together(world_set, vocab_dir, tmp_path):
    """Per correct asset, the scene and an edit of it are rendered from the same cameras and
    each is scored under both prompts; the loss is low only when each render prefers its own
    prompt and each prompt its own render (the layout is (pair, image, prompt))."""
    torch.manual_seed(0)
    module = Reward3DModule(
        tiny_reward(vocab_dir), finetune="full", crossed_edit_weight=1.0, baselines=False
    )
    dm = datamodule(world_set)
    dm.setup("fit")
    batch = pairs_as_asset_batch(next(iter(dm.train_dataloader())))
    loss = module._crossed_edit_loss(batch)
    assert loss is not None and torch.isfinite(loss)
    assert module._crossed_edit_loss({**batch, "asset_scene": [""] * len(batch["views"])}) is None

    def scripted(sign: float):
        def scores(tokens, ids, mask):  # (n*2*2,) in (pair, image, prompt) order
            k = torch.arange(tokens.shape[0] // 4)
            return sign * torch.where((k // 2) % 2 == k % 2, 10.0, -10.0)

        return scores

    module._reward_from_tokens = scripted(1.0)  # type: ignore[method-assign]
    assert module._crossed_edit_loss(batch) < 1e-6
    module._reward_from_tokens = scripted(-1.0)  # type: ignore[method-assign]
    assert module._crossed_edit_loss(batch) > 10.0
    # a blind model (same score everywhere) sits at chance: log 2
    module._reward_from_tokens = lambda tokens, ids, mask: torch.zeros(tokens.shape[0] // 4)  # type: ignore[method-assign]
    assert float(module._crossed_edit_loss(batch)) == pytest.approx(math.log(2))

    trained = Reward3DModule(
        tiny_reward(vocab_dir), finetune="full", crossed_edit_weight=1.0, baselines=False
    )
    fit = trainer(tmp_path, max_steps=1, limit_val_batches=0)
    fit.fit(trained, datamodule(world_set))
    assert torch.isfinite(fit.callback_metrics["train/crossed_edit_loss"])


def test_text_side_alone_on_correct_assets(world_set, vocab_dir, tmp_path):
    """``train_assets="correct"``: training batches hold each prompt's correct asset alone (no
    pairs) and ``preference_weight: 0`` trains the text side on them; validation keeps pairs."""
    dm = PreferenceDataModule(
        world_set, val_fraction=0.2, test_fraction=0.2, batch_size=3, grouping="prompt",
        train_assets="correct",
    )  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["asset_defect"]) == {"none"} and batch["better_index"].numel() == 0
    assert len(batch["views"]) == 3 and all(batch["asset_scene"])
    assert next(iter(dm.val_dataloader()))["better_index"].numel() > 0
    module = Reward3DModule(
        tiny_reward(vocab_dir), finetune="full", prompt_edit_weight=1.0, preference_weight=0.0,
        baselines=False,
    )  # fmt: skip
    fit = trainer(tmp_path, max_steps=2, logger=True, limit_val_batches=0)
    fit.fit(module, dm)
    assert "train/prompt_edit_loss" in fit.logged_metrics
    assert "train/loss" not in fit.logged_metrics
    # without a text-side term such a batch has nothing to learn from: a clear error
    module.hparams.prompt_edit_weight = 0.0
    with pytest.raises(ValueError, match="no loss term"):
        module.training_step(batch, 0)
    with pytest.raises(ValueError, match="grouping='prompt'"):
        PreferenceDataModule(world_set, grouping="pair", train_assets="correct")
    with pytest.raises(ValueError, match="train_assets"):
        PreferenceDataModule(world_set, grouping="prompt", train_assets="best")  # type: ignore[arg-type]


def test_init_weights_start_from_another_runs_model(learnable_set, vocab_dir, tmp_path):
    """``init_weights`` loads a checkpoint's model weights strictly (optimizer and step start
    afresh); a missing file or a different model is a clear error."""
    first = Reward3DModule(tiny_reward(vocab_dir), finetune="lora", baselines=False)
    fit = trainer(tmp_path, max_steps=2, limit_val_batches=0)
    fit.fit(first, datamodule(learnable_set))
    ckpt = tmp_path / "first.ckpt"
    fit.save_checkpoint(ckpt)
    fresh = Reward3DModule(tiny_reward(vocab_dir), finetune="lora", baselines=False)
    trained = [n for n, p in first.model.named_parameters() if p.requires_grad]
    assert any(
        not torch.equal(first.model.get_parameter(n), fresh.model.get_parameter(n)) for n in trained
    )
    second = Reward3DModule(
        tiny_reward(vocab_dir), finetune="lora", baselines=True, init_weights=str(ckpt)
    )
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")
    # the checkpoint left the frozen base out: a model built on other base weights is refused
    with pytest.raises(ValueError, match=r"first\.ckpt \(init_weights\).*differ in this build"):
        Reward3DModule(
            tiny_reward(vocab_dir, seed=1), finetune="lora", baselines=False, init_weights=str(ckpt)
        )
    with pytest.raises(FileNotFoundError, match="init_weights"):
        Reward3DModule(tiny_reward(vocab_dir), init_weights=str(tmp_path / "missing.ckpt"))
    with pytest.raises(CheckpointMismatchError, match="init_weights"):
        Reward3DModule(tiny_reward(vocab_dir), lora_rank=4, init_weights=str(ckpt))


def test_crossed_edit_kind_odds_are_validated_and_drawn_by_weight():
    """``crossed_edit_kinds``: unnamed kinds keep odds 1, unknown kinds and bad odds are
    refused by name, a kind with odds 0 is never drawn, and heavier kinds come first more often
    (in proportion to their odds for the first draw)."""
    odds = edit_kind_odds({"colour": 3, "relation": 0})
    assert odds == {
        "colour": 3.0,
        "shape": 1.0,
        "swapped colours": 1.0,
        "relation": 0.0,
        "object left out": 1.0,
    }
    with pytest.raises(ValueError, match=r"unknown edit kinds \['color'\]"):
        edit_kind_odds({"color": 2})
    with pytest.raises(ValueError, match=r"crossed_edit_kinds\['shape'\]"):
        edit_kind_odds({"shape": -1})
    with pytest.raises(ValueError, match="every edit kind odds 0"):
        edit_kind_odds(dict.fromkeys(["colour", "shape", "swapped colours", "relation",
                                         "object left out"], 0))  # fmt: skip
    rng = random.Random(0)
    orders = [weighted_order(odds, rng) for _ in range(6000)]
    assert all("relation" not in order and len(order) == 4 for order in orders)
    first = [order[0] for order in orders]
    assert first.count("colour") / len(first) == pytest.approx(3 / 6, abs=0.03)
    assert first.count("shape") / len(first) == pytest.approx(1 / 6, abs=0.03)
    with pytest.raises(ValueError, match="crossed_edits_per_asset"):
        Reward3DModule(crossed_edits_per_asset=0)


@pytest.mark.filterwarnings("ignore:.*are truncated")
def test_crossed_term_renders_one_pair_per_edit(world_set, vocab_dir, monkeypatch):
    """``crossed_edits_per_asset: 2`` scores up to two edits of different kinds per correct
    asset, only of the kinds with odds > 0."""
    import dreamreward.modules.reward3d_text_side as module_file

    drawn: list[str] = []
    edit = module_file.edit_scene

    def recording_edit(scene, kind, rng):
        edited = edit(scene, kind, rng)
        if edited is not None and not module_file.is_novel(edited):
            drawn.append(kind)
        return edited

    monkeypatch.setattr(module_file, "edit_scene", recording_edit)
    dm = datamodule(world_set)
    dm.setup("fit")
    batch = pairs_as_asset_batch(next(iter(dm.train_dataloader())))
    scored: list[int] = []
    pairs: list[int] = []
    for per_asset in (1, 2):
        torch.manual_seed(0)
        module = Reward3DModule(
            tiny_reward(vocab_dir),
            finetune="full",
            crossed_edit_weight=1.0,
            crossed_edit_kinds={"relation": 0, "object left out": 0},
            crossed_edits_per_asset=per_asset,
            baselines=False,
        )
        counted = module._reward_from_tokens

        def counting(tokens, ids, mask, counted=counted):
            scored.append(tokens.shape[0] // 4)
            return counted(tokens, ids, mask)

        module._reward_from_tokens = counting  # type: ignore[method-assign]
        drawn.clear()
        assert torch.isfinite(module._crossed_edit_loss(batch))
        assert set(drawn) <= {"colour", "shape", "swapped colours"}
        pairs.append(len(drawn))
    # every applicable edit drawn is scored: (pairs x 2 images x 2 prompts); a one-object scene
    # has no "swapped colours", and an edit into a held-out composition is skipped
    assert scored == [4 * n for n in pairs]
    assert pairs[0] < pairs[1] <= 2 * pairs[0]


@pytest.mark.filterwarnings("ignore:.*are truncated")
def test_train_augmentation_applies_to_training_views_only(world_set, vocab_dir, tmp_path):
    """The preference batch's views and the crossed term's renders are augmented in training;
    validation sees the views as stored."""
    from dreamreward.models.reward3d import ViewAugmentation

    calls: list[tuple[bool, tuple[int, ...]]] = []

    class Recording(ViewAugmentation):
        def forward(self, views, generator=None):
            calls.append((module.training, tuple(views.shape)))
            return super().forward(views, generator)

    torch.manual_seed(0)
    module = Reward3DModule(
        tiny_reward(vocab_dir),
        finetune="full",
        crossed_edit_weight=1.0,
        baselines=False,
        train_augmentation=Recording(),
    )
    fit = trainer(tmp_path, max_steps=1, limit_val_batches=1, val_check_interval=1)
    fit.fit(module, datamodule(world_set))
    assert torch.isfinite(fit.callback_metrics["train/loss"])
    assert "val/loss" in fit.callback_metrics  # validation ran
    assert calls and all(training for training, _ in calls)  # never in validation
    shapes = {shape[1:] for _, shape in calls}
    assert (4, 3, 16, 16) in shapes and (3, 16, 16) in shapes  # the batch, the crossed renders


def test_init_weights_from_an_export_folder_loads_its_adapter(learnable_set, vocab_dir, tmp_path):
    """An export's LoRA adapter (e.g. the shipped model's) starts a LoRA run exactly there; a
    folder without an adapter, another rank or a non-LoRA run is a clear error."""
    from peft import get_peft_model_state_dict

    first = Reward3DModule(tiny_reward(vocab_dir), finetune="lora", lr=1e-2, baselines=False)
    trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(first, datamodule(learnable_set))
    folder = save_reward3d(first.model, tmp_path / "export")
    second = Reward3DModule(
        tiny_reward(vocab_dir), finetune="lora", baselines=False, init_weights=str(folder)
    )
    theirs, ours = get_peft_model_state_dict(first.model), get_peft_model_state_dict(second.model)
    assert theirs.keys() == ours.keys() and any("lora_B" in k for k in ours)
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, msg=lambda m, key=key: f"{key}: {m}")
    with pytest.raises(CheckpointMismatchError, match="init_weights"):
        Reward3DModule(tiny_reward(vocab_dir), lora_rank=4, init_weights=str(folder))
    with pytest.raises(ValueError, match="finetune=lora runs only"):
        Reward3DModule(tiny_reward(vocab_dir), finetune="full", init_weights=str(folder))
    with pytest.raises(ValueError, match="has no adapter/adapter_model.safetensors"):
        Reward3DModule(tiny_reward(vocab_dir), init_weights=str(tmp_path))


def test_adversarial_training_perturbs_the_pair_views_only_in_training(
    learnable_set, vocab_dir, tmp_path, monkeypatch
):
    """With ``adversarial_epsilon`` the preference pairs are trained on views pushed against the
    ranking (within the ball); evaluation sees the views as they are."""
    import dreamreward.modules.reward3d as reward3d_module

    seen: list[tuple[float, float]] = []
    original = reward3d_module.adversarial_views

    def recording(loss_of_views, views, epsilon, steps, generator):
        out = original(loss_of_views, views, epsilon, steps, generator)
        rms = (out - views).flatten(2).pow(2).mean(dim=2).sqrt().max()
        seen.append((float(rms), float(loss_of_views(out) - loss_of_views(views))))
        return out

    monkeypatch.setattr(reward3d_module, "adversarial_views", recording)
    module = Reward3DModule(
        tiny_reward(vocab_dir), baselines=False, adversarial_epsilon=0.05, adversarial_steps=2
    )
    trainer(tmp_path, max_steps=2, limit_val_batches=1, val_check_interval=2).fit(
        module, datamodule(learnable_set)
    )
    assert len(seen) == 2  # the training steps only
    assert all(0 < rms <= 0.05 + 1e-6 and raised > 0 for rms, raised in seen)
    with pytest.raises(ValueError, match="adversarial_epsilon must be a finite number >= 0"):
        Reward3DModule(tiny_reward(vocab_dir), adversarial_epsilon=-1.0)

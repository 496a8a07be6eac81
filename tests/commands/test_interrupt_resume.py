"""Interrupt and resume through the command line, at tiny scale: a run stopped by Ctrl-C or
SIGTERM at an early step exits non-zero with a resumable ``last.ckpt``, and resuming it gives
the uninterrupted run's weights exactly. A checkpoint of another run is refused through the CLI
(the command line's prompt is never replaced by the checkpoint's)."""

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from _dreamfl_tiny import tiny_evaluation_setup
from dreamreward.checkpointing import AtomicCheckpointIO, ResumableCheckpoint
from dreamreward.cli import main

STEPS = 6


def _config(tmp_path: Path, name: str, signal_name: str | None = None) -> Path:
    """The tiny DreamFL config of the evaluation tests, its own output folder, 6 steps, the
    main job's checkpoint callback (first periodic save at step 300: never, here), and
    optionally a signal sent to the process after step 2."""
    tiny, _ = tiny_evaluation_setup(tmp_path / name)
    config = yaml.safe_load(tiny.read_text())
    config["trainer"].update(
        logger=False, max_steps=STEPS, default_root_dir=str(tmp_path / name / "run")
    )
    config["data"]["init_args"]["steps_per_epoch"] = STEPS
    callbacks = config["trainer"]["callbacks"]
    assert callbacks[0]["class_path"] == "dreamreward.checkpointing.ResumableCheckpoint"
    if signal_name is not None:
        callbacks.insert(
            0,
            {
                "class_path": "_callbacks.SignalAt",
                "init_args": {"step": 2, "signal_name": signal_name},
            },
        )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _weights(checkpoint: Path) -> tuple[int, dict[str, torch.Tensor]]:
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return saved["global_step"], saved["state_dict"]


def test_a_stopped_run_resumes_to_the_uninterrupted_result(tmp_path) -> None:
    straight = _config(tmp_path, "straight")
    main(["fit", "--config", str(straight)])
    step, reference = _weights(tmp_path / "straight" / "run" / "checkpoints" / "last.ckpt")
    assert step == STEPS

    for signal_name, code in (("SIGINT", 130), ("SIGTERM", 143)):
        config = _config(tmp_path, signal_name, signal_name)
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(config)])
        assert exit_info.value.code == code
        last = tmp_path / signal_name / "run" / "checkpoints" / "last.ckpt"
        assert _weights(last)[0] == 2  # the step it stopped after, saved
        assert not list(last.parent.glob("*.partial"))
        main(["fit", "--config", str(_config(tmp_path, signal_name)), "--ckpt_path", str(last)])
        step, resumed = _weights(last)
        assert step == STEPS
        assert reference.keys() == resumed.keys()
        for key, value in reference.items():
            assert torch.equal(value, resumed[key]), f"{signal_name}: {key} differs after resume"

    # a checkpoint of another module class (a fit_mesh run) does not switch the config's class:
    # the DreamFL module names what differs
    foreign = torch.load(
        tmp_path / "straight" / "run" / "checkpoints" / "last.ckpt", weights_only=False
    )
    foreign["hyper_parameters"]["_class_path"] = (
        "dreamreward.modules.mesh_reconstruction.MeshReconstructionModule"
    )
    foreign["state_dict"]["silhouette_head.weight"] = torch.zeros(1)
    torch.save(foreign, tmp_path / "fit_mesh.ckpt")
    with pytest.raises(ValueError, match="in the checkpoint only: silhouette_head.weight"):
        main(["fit", "--config", str(straight), "--ckpt_path", str(tmp_path / "fit_mesh.ckpt")])

    # another prompt on the command line with this run's checkpoint: refused, not overridden
    with pytest.raises(ValueError, match="prompt: 'a red cube on top of a blue sphere' in the"):
        main(
            [
                "fit",
                "--config",
                str(straight),
                "--model.init_args.prompt",
                "a large orange cone",
                "--ckpt_path",
                str(tmp_path / "straight" / "run" / "checkpoints" / "last.ckpt"),
            ]
        )


class _WorseningValidation(L.LightningModule):
    """A metric that is best at the first validation and worse at every later one."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.validations = 0

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return (self.weight - batch).pow(2).sum()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.validations += 1
        self.log("val/metric", float(self.validations))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_last_checkpoint_follows_every_validation_not_only_improvements(tmp_path) -> None:
    """Lightning rewrites last.ckpt only when it also saved a top-k checkpoint at that step;
    ResumableCheckpoint rewrites it at every validation, so a resume never goes back to the
    last improvement."""
    callback = ResumableCheckpoint(dirpath=tmp_path, monitor="val/metric", mode="min")
    trainer = L.Trainer(
        max_steps=6,
        val_check_interval=2,
        limit_val_batches=1,
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    loader = DataLoader(torch.ones(12, 1), batch_size=1)
    trainer.fit(_WorseningValidation(), loader, DataLoader(torch.ones(1, 1)))
    assert "step=2" in Path(callback.best_model_path).name  # the best stayed at step 2
    assert _weights(tmp_path / "last.ckpt")[0] == 6  # the resume point is the latest step
    assert not list(tmp_path.glob("*.partial"))


def test_atomic_checkpoint_io_leaves_the_previous_file_on_a_failed_write(tmp_path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}

    class Unpicklable:
        def __reduce__(self):
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": 2, "x": Unpicklable()}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}  # intact, not truncated
    assert list(tmp_path.iterdir()) == [target]  # no partial file left behind

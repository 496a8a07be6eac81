"""The Lightning side of the command line: ``fit | validate | test | predict --config ...``.

:class:`DreamRewardCLI` is LightningCLI with the project's defaults; :func:`run_lightning` runs
one of its subcommands and :func:`build_from_config` builds the configured objects without
running anything. The extra subcommands (``build-primitives``, ``evaluate-dreamfl``, ...) live in
:mod:`dreamreward.cli`, which dispatches to this module; tools that launch Lightning runs
themselves (``evaluate_dreamfl``) import this module, never the command line's.

Components are chosen in YAML by ``class_path`` (LightningCLI subclass mode), never by a string
registry: any LightningModule / LightningDataModule importable from Python can be configured.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI

from dreamreward.checkpointing import (
    CKPT_PATH_KEYWORDS,
    check_checkpoint_file,
    install_atomic_checkpoint_io,
)
from dreamreward.config_compat import translate_legacy_args
from dreamreward.error_boundary import user_error


class DreamRewardCLI(LightningCLI):
    """LightningCLI with the project's defaults.

    A model with ``test_after_fit = True`` (e.g. ``Reward3DModule``) is tested right after
    ``fit`` on its best checkpoint (on the weights in memory when it sets
    ``test_final_weights``), so one command trains, evaluates and writes the results table.
    """

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` before any work, and keep the command line's config.

        LightningCLI would load the checkpoint here and merge its hyper-parameters into the
        config, over the command line: ``--model.init_args.prompt X --ckpt_path <a run of
        Y>`` silently optimised Y. The config stays as given; the module compares it with the
        checkpoint when it is restored and refuses one of another run, naming what differs.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if ckpt_path and str(ckpt_path) not in CKPT_PATH_KEYWORDS:
            check_checkpoint_file(ckpt_path)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        install_atomic_checkpoint_io(trainer)  # a kill mid-write never truncates a checkpoint
        return trainer

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as error:
            cause = user_error(error)
            if cause is None or cause is error:
                raise
            # jsonargparse reports a class that failed to build as "does not validate against
            # any of the Union subtypes" followed by the whole config; the project's own check
            # (a missing weights file, a bad field) is what the user needs to see
            raise cause from None

    def after_fit(self) -> None:
        if getattr(self.model, "test_after_fit", False) and not self.trainer.interrupted:
            best = getattr(self.trainer.checkpoint_callback, "best_model_path", "") or None
            if getattr(self.model, "test_final_weights", False):
                best = None  # the weights in memory: what fit ended with and exported
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best)


def build_from_config(args: list[str]) -> DreamRewardCLI:
    """The trainer, model and data that ``fit --config ...`` would build, without running
    anything (``cli.model``, ``cli.datamodule``, ``cli.trainer``): for notebooks, benchmarks
    and tools that need the configured objects.

    Args:
        args: config arguments without a subcommand, e.g. ``["--config", "x.yaml"]``.
    """
    return DreamRewardCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=translate_legacy_args(args),
    )


def run_lightning(args: list[str]) -> DreamRewardCLI:
    """Run ``fit | validate | test | predict`` with ``args`` (the subcommand first), as
    ``python -m dreamreward`` does; the run's config is saved beside its logs."""
    # Nothing in this project downloads weights at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return DreamRewardCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=translate_legacy_args(args),
    )

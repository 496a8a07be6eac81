"""The command line: ``python -m dreamreward {fit,validate,test,predict} --config ...``.

Extra subcommands: ``python -m dreamreward build-primitives --out DIR [--num_prompts N]`` and
``python -m dreamreward convert-rewarddb --root 3DRewardDB --out DIR``;
``python -m dreamreward score --prompt TEXT --inputs PATH [PATH ...] --out scores.csv``;
``python -m dreamreward build-multiview --out DIR`` (the prior's render set);
``python -m dreamreward sample --prompt TEXT --out grid.png`` (4 views from the prior);
``python -m dreamreward evaluate-dreamfl --out DIR`` (DreamFL vs SDS over a prompt set);
``python -m dreamreward build-generated --out DIR`` (the prior's samples of a split's prompts,
ranked by the oracle) and ``evaluate-reward3d --data DIR`` (does a Reward3D rank them as the
oracle does).

Run as a command (``entry``), everything sits behind ``error_boundary``: a mistake in the input is
one line naming the field or file, exit code 2; a bug keeps its traceback.

Components are chosen in YAML by ``class_path`` (LightningCLI subclass mode), never by a string
registry: any LightningModule / LightningDataModule importable from Python can be configured.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import lightning as L
from jsonargparse import CLI
from lightning.pytorch.cli import LightningCLI

from dreamreward.checkpointing import (
    CKPT_PATH_KEYWORDS,
    check_checkpoint_file,
    install_atomic_checkpoint_io,
)
from dreamreward.error_boundary import run_with_error_boundary, user_error


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


def _extra_commands() -> dict[str, Callable[..., object]]:
    """Subcommands beside Lightning's, each a typed function (jsonargparse builds the parser)."""
    from dreamreward.data.build_generated import build_generated
    from dreamreward.data.build_primitives import build_primitives
    from dreamreward.data.multiview import build_multiview
    from dreamreward.data.rewarddb import convert_rewarddb
    from dreamreward.evaluate_dreamfl import evaluate_dreamfl
    from dreamreward.evaluate_reward3d import evaluate_reward3d
    from dreamreward.sampling import sample_views
    from dreamreward.scoring import score_files

    return {
        "build-primitives": build_primitives,
        "build-generated": build_generated,
        "build-multiview": build_multiview,
        "convert-rewarddb": convert_rewarddb,
        "score": score_files,
        "sample": sample_views,
        "evaluate-dreamfl": evaluate_dreamfl,
        "evaluate-reward3d": evaluate_reward3d,
    }


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
        args=args,
    )


def main(args: list[str] | None = None) -> DreamRewardCLI | object:
    """Run ``fit | validate | test | predict`` (LightningCLI) or an extra subcommand."""
    # Nothing in this project downloads weights at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = sys.argv[1:] if args is None else args
    extra = _extra_commands()
    if argv and argv[0] in extra:
        return CLI(extra[argv[0]], args=argv[1:], as_positional=False)
    return DreamRewardCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def entry() -> None:
    """The ``dreamreward`` / ``python -m dreamreward`` command: :func:`main` behind the error
    boundary (a user's mistake is one line and exit code 2; see ``error_boundary``)."""
    run_with_error_boundary(main, sys.argv[1:])


if __name__ == "__main__":
    entry()

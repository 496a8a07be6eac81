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

Components are chosen in YAML by ``class_path`` (LightningCLI subclass mode), never by a string
registry: any LightningModule / LightningDataModule importable from Python can be configured.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import lightning as L
from jsonargparse import CLI
from lightning.pytorch.cli import LightningCLI


class DreamRewardCLI(LightningCLI):
    """LightningCLI with the project's defaults.

    A model with ``test_after_fit = True`` (e.g. ``Reward3DModule``) is tested right after
    ``fit`` on its best checkpoint (on the weights in memory when it sets
    ``test_final_weights``), so one command trains, evaluates and writes the results table.
    """

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:
            cause = _missing_file(error)
            if cause is None:
                raise
            # jsonargparse reports a class that failed to build as "does not validate against
            # any of the Union subtypes" followed by the whole config; the missing file (a
            # weights path in the config) is what the user needs to see
            raise SystemExit(f"error: {cause}") from error

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


def _missing_file(error: BaseException) -> FileNotFoundError | None:
    """The FileNotFoundError a config's class raised while being built, if that caused
    ``error`` (followed through explicit causes and implicit contexts, each exception once)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, FileNotFoundError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


if __name__ == "__main__":
    main()

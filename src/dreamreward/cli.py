"""The command line: ``python -m dreamreward {fit,validate,test,predict} --config ...``.

Components are chosen in YAML by ``class_path`` (LightningCLI subclass mode), never by a string
registry: any LightningModule / LightningDataModule importable from Python can be configured.
"""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.cli import LightningCLI


class DreamRewardCLI(LightningCLI):
    """LightningCLI with the project's defaults."""


def main(args: list[str] | None = None) -> DreamRewardCLI:
    # Nothing in this project downloads weights at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return DreamRewardCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()

"""A datamodule for optimisation jobs that draw their own inputs (DreamFL, score distillation).

The module samples cameras itself each step; Lightning still wants loaders, so this one yields
``steps_per_epoch`` step indices for training and a single item for validation and test.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class OptimizationSteps(L.LightningDataModule):
    """Step indices as the "data" of a per-asset optimisation.

    Args:
        steps_per_epoch: training batches per epoch (an epoch is only a logging unit here).
    """

    def __init__(self, steps_per_epoch: int = 100) -> None:
        super().__init__()
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.steps_per_epoch = steps_per_epoch

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.arange(self.steps_per_epoch)), batch_size=None)

    def _single(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(1)), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._single()

    def test_dataloader(self) -> DataLoader:
        return self._single()

    def predict_dataloader(self) -> DataLoader:
        return self._single()

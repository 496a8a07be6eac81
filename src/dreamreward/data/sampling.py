"""The training shuffle that an interrupted run resumes exactly (preference pairs, multi-view
renders)."""

from __future__ import annotations

import warnings
from typing import Any

import torch


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``(seed, epoch)`` alone, so a run resumed at any
    epoch sees the same order as an uninterrupted one (Lightning calls ``set_epoch``).

    A run resumed in the middle of an epoch must also skip the batches that epoch already
    trained on (Lightning restarts a plain DataLoader's epoch from its first batch):
    :meth:`resume_from` says how many.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self._skip_epoch, self._skip = -1, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_from(self, trainer: Any, batch_size: int, drop_last: bool) -> None:
        """Skip the samples of the current epoch that ``trainer`` (restored from a checkpoint)
        already consumed.

        Assumes a single process (under DDP Lightning wraps this sampler per rank; there the
        resumed epoch restarts, with a warning), no ``limit_train_batches``, and that every
        epoch ends with an optimizer step (Lightning steps at epoch end even when
        ``accumulate_grad_batches`` does not divide the epoch).
        """
        if trainer is None:
            return
        if getattr(trainer, "world_size", 1) > 1:
            if trainer.global_step:
                warnings.warn(
                    "mid-epoch resume under DDP restarts the interrupted epoch's data order "
                    "(the per-rank skip is not implemented)",
                    stacklevel=2,
                )
            return
        batches_per_epoch = self.n // batch_size if drop_last else -(-self.n // batch_size)
        if batches_per_epoch == 0:
            return
        accumulate = trainer.accumulate_grad_batches
        steps_per_epoch = -(-batches_per_epoch // accumulate)
        done = (trainer.global_step - trainer.current_epoch * steps_per_epoch) * accumulate
        if 0 < done < batches_per_epoch:
            self._skip_epoch, self._skip = trainer.current_epoch, done * batch_size

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=gen).tolist()
        if self.epoch == self._skip_epoch:
            order = order[self._skip :]
        return iter(order)

    def __len__(self) -> int:
        # the full epoch: Lightning counts the resumed epoch's batches from where it stopped
        return self.n

"""Lightning callbacks shared by the resume tests."""

from __future__ import annotations

import lightning as L


class StopAt(L.Callback):
    """Save a checkpoint and stop after ``step`` optimizer steps (an interruption)."""

    def __init__(self, step: int, path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True

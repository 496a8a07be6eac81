"""Lightning callbacks shared by the resume tests."""

from __future__ import annotations

import os
import signal

import lightning as L


class StopAt(L.Callback):
    """Save a checkpoint and stop after ``step`` optimizer steps (an interruption)."""

    def __init__(self, step: int, path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


class SignalAt(L.Callback):
    """Send this process ``signal_name`` at the end of optimizer step ``step`` (a Ctrl-C or a
    scheduler's SIGTERM arriving mid-run, at a known step)."""

    def __init__(self, step: int, signal_name: str = "SIGINT") -> None:
        self.step, self.signal_name = step, signal_name

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal_name))

"""Checkpoints that survive interruptions: atomic writes, a ``last.ckpt`` that is always the
latest, a clean stop on Ctrl-C / SIGTERM, and a check of ``--ckpt_path`` before any work.

- :class:`AtomicCheckpointIO` writes every checkpoint under a temporary name and renames it
  into place, so a full disk or a kill mid-write never leaves a truncated file under a valid
  name (the previous checkpoint stays). The command line installs it on every trainer.
- :class:`ResumableCheckpoint` is Lightning's ``ModelCheckpoint`` with two changes. Lightning
  rewrites ``last.ckpt`` only when it also saved a top-k checkpoint at that step, so once the
  monitored metric stops improving ``last.ckpt`` goes stale and a resume restarts from the last
  *improvement*; here ``last.ckpt`` is rewritten at every save point. And SIGINT / SIGTERM no
  longer stop a run wherever they land (mid-step, or with exit code 0 and no checkpoint): the
  current step finishes, ``last.ckpt`` is written, and the process exits with 130 / 143
  (:class:`RunStopped`), naming the checkpoint to resume from. A second Ctrl-C stops at once.
- :func:`check_checkpoint_file` refuses a missing, truncated or foreign ``--ckpt_path`` with a
  message naming it, before the model is built.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import zipfile
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import lightning as L
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

# Lightning's own --ckpt_path keywords (resolved by the trainer, not files).
CKPT_PATH_KEYWORDS = ("last", "best", "hpc", "registry")
_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as shells report


class RunStopped(SystemExit):
    """A run stopped by SIGINT / SIGTERM after saving a resumable checkpoint (exit 130 / 143)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes to ``<name>.partial`` and renames it into place."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, target)  # atomic on one file system
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


def install_atomic_checkpoint_io(trainer: L.Trainer) -> None:
    """Give ``trainer`` :class:`AtomicCheckpointIO` unless it was configured with its own."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


def check_checkpoint_file(path: str | os.PathLike[str], what: str = "--ckpt_path") -> None:
    """Raise a clear error unless ``path`` is a complete ``torch.save`` file.

    ``torch.save`` writes a zip archive; a truncated file has no central directory and random
    bytes none at all, which ``zipfile`` finds without reading the tensors.

    Raises:
        FileNotFoundError: nothing at ``path``, or a folder.
        ValueError: the file is not a complete PyTorch checkpoint.
    """
    file = Path(path)
    if not file.is_file():
        kind = "a folder" if file.is_dir() else "no file"
        raise FileNotFoundError(f"{what}: {kind} at {file} (give a .ckpt file of a run)")
    if not zipfile.is_zipfile(file):
        raise ValueError(
            f"{what}: {file} is not a complete PyTorch checkpoint (truncated, or another kind "
            "of file): resume from another checkpoint of the run, e.g. its last.ckpt"
        )


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is always the latest state, and which turns
    SIGINT / SIGTERM into a checkpoint and a non-zero exit.

    Takes ``ModelCheckpoint``'s arguments; ``save_last`` defaults to True here (the resume point).
    """

    def __init__(
        self, *args: Any, save_last: bool | Literal["link"] | None = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, save_last=save_last, **kwargs)
        self._stop_signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ last.ckpt, always
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and not trainer.sanity_checking
        ):
            self._save_last_if_behind(trainer)

    def _save_last_if_behind(self, trainer: L.Trainer) -> None:
        # Lightning writes last.ckpt with every top-k save, so a save at this step means
        # last.ckpt is current
        saved_now = self._last_global_step_saved == trainer.global_step
        if saved_now and self.last_model_path and Path(self.last_model_path).is_file():
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    # ------------------------------------------------------------------ stop on a signal
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in _EXIT_CODES:
            self._previous_handlers[sig] = signal.signal(sig, self._request_stop)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self._stop_signal = signum
        print(
            f"\n{signal.Signals(signum).name} received: finishing this step, then saving a "
            "checkpoint to resume from (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, *args, **kwargs)
        if self._stop_signal is None:
            return
        signum, self._stop_signal = self._stop_signal, None
        self._restore_handlers()
        if self.save_last:
            self._save_last_if_behind(trainer)
            where = self.last_model_path
        else:
            where = str(Path(self.dirpath or ".") / "interrupted.ckpt")
            self._save_checkpoint(trainer, where)
        message = (
            f"stopped by {signal.Signals(signum).name} after step {trainer.global_step}; "
            f"resume with --ckpt_path {where}"
        )
        print(message, file=sys.stderr, flush=True)
        raise RunStopped(_EXIT_CODES[signal.Signals(signum)])

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        super().on_train_end(trainer, pl_module)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()
        super().on_exception(trainer, pl_module, exception)

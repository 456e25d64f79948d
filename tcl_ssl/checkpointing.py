"""Losing nothing: atomic checkpoints every epoch and every N steps, the random state in them, and
a stop at the first non-finite loss.

- :func:`read_checkpoint` reads a checkpoint of ``tcl-ssl pretrain`` after checking it: the
  archive's CRCs, and the keys every such checkpoint holds; the one reader of a checkpoint for a
  resume's preflight check, ``eval`` and ``export``.
- :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file beside its destination and
  renames it into place, so a process killed while saving, or a full disk, leaves the previous
  checkpoint whole; and checks a checkpoint before Lightning loads it (as :func:`read_checkpoint`).
- :class:`LastCheckpoint` writes ``last.ckpt`` at the end of every epoch and, optionally, every
  N optimiser steps.
- :class:`ResumeState` puts the torch (CPU and CUDA), NumPy and Python random states and the
  training loader's position (:class:`tcl_ssl.data.ResumableDataLoader`) into each checkpoint
  and restores them when a resumed run starts training, so that a run resumed mid-epoch sees
  the batches and augmentations that the uninterrupted run would have seen.
- :class:`NonFiniteLossGuard` stops the run at the first step whose loss is NaN or inf, naming
  the step, before a checkpoint of the broken weights can be written.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, Checkpoint

from tcl_ssl.safe_io import DamagedFileError, check_archive, error_line, save_torch

log = logging.getLogger(__name__)


@runtime_checkable
class _Stateful(Protocol):
    """An object with ``state_dict()`` and ``load_state_dict()`` (as Lightning detects one)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


#: the keys of every checkpoint that ``tcl-ssl pretrain`` writes (Lightning's)
CHECKPOINT_KEYS = ("state_dict", "pytorch-lightning_version", "global_step")

#: what to do about a checkpoint that cannot be resumed from
RESUME_ADVICE = "resume from an earlier checkpoint, or delete it (or give another --out) to start over"

#: what to do about a run's checkpoint that ``eval`` or ``export`` cannot read
RUN_ADVICE = (
    "the run's checkpoint is damaged: resume the run (tcl-ssl pretrain --resume RUN) to write it again, "
    "or pretrain it again"
)

#: checkpoints whose archive :func:`read_checkpoint` verified in this process: resolved path ->
#: (device, inode, size, modification time in ns) when verified
_verified: dict[Path, tuple[int, int, int, int]] = {}


def _identity(path: Path) -> tuple[Path, tuple[int, int, int, int]]:
    stat = path.stat()
    return path.resolve(), (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def read_checkpoint(path: str | Path, advice: str = RESUME_ADVICE) -> dict[str, Any]:
    """The checkpoint of ``tcl-ssl pretrain`` at ``path`` (tensors on the CPU, memory-mapped),
    after checking that it is whole (:func:`tcl_ssl.safe_io.check_archive`) and that it is one:
    a dictionary with :data:`CHECKPOINT_KEYS`. Read with ``torch.load(weights_only=True)``: a
    checkpoint holds tensors, numbers, strings and containers only (see :class:`ResumeState`).

    Args:
        path: the checkpoint file.
        advice: what the user should do about a file that is refused, appended to the message.

    Raises:
        DamagedFileError: naming the file, what is wrong with it (damaged; not a checkpoint
            written by tcl-ssl pretrain, with the keys it lacks) and ``advice``.
        OSError: if the file cannot be read at all (missing, no permission).
    """
    path = check_archive(path, advice)
    key, identity = _identity(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # whole, but not what weights_only reads (an arbitrary pickle)
        raise DamagedFileError(
            path, f"is not a checkpoint written by tcl-ssl pretrain ({error_line(error)})", advice
        ) from None
    _check_keys(path, checkpoint, advice)
    _verified[key] = identity
    return checkpoint


def _check_keys(path: Path, checkpoint: Any, advice: str) -> None:
    """Raise :class:`DamagedFileError` unless ``checkpoint`` is a dict with :data:`CHECKPOINT_KEYS`."""
    if not isinstance(checkpoint, dict):
        raise DamagedFileError(
            path, f"is not a checkpoint written by tcl-ssl pretrain (it holds a {type(checkpoint).__name__})", advice
        )
    missing = [name for name in CHECKPOINT_KEYS if name not in checkpoint]
    if missing:
        raise DamagedFileError(
            path, f"is not a checkpoint written by tcl-ssl pretrain (it lacks {', '.join(map(repr, missing))})", advice
        )


def _verified_unchanged(path: Path) -> bool:
    """Whether :func:`read_checkpoint` verified ``path`` in this process and it has not changed
    since (same file, size and modification time)."""
    try:
        key, identity = _identity(path)
    except OSError:
        return False
    return _verified.get(key) == identity


#: how many consecutive non-finite losses a float16 GradScaler may skip before the run stops
SCALER_PATIENCE = 20


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic and whose loads are checked.

    Pass it to the Trainer as ``plugins=[AtomicCheckpointIO()]``. A save goes through
    :func:`tcl_ssl.safe_io.save_torch` (temporary file + ``fsync`` + ``os.replace``: a failed or
    killed save leaves the previous checkpoint whole, and a failure raises
    :class:`~tcl_ssl.safe_io.WriteError` naming the file); a load first verifies the archive's
    CRCs (:func:`tcl_ssl.safe_io.check_archive`), unless :func:`read_checkpoint` verified the same
    unchanged file in this process (the resume's preflight check), and then refuses a file that
    is not a checkpoint of ``tcl-ssl pretrain`` (:data:`CHECKPOINT_KEYS`), both by name, as a
    :class:`~tcl_ssl.safe_io.DamagedFileError`. Remote paths (``scheme://``) are Lightning's.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (:func:`tcl_ssl.safe_io.save_torch`)."""
        if "://" in str(path):  # remote file systems: Lightning's own (fsspec) path
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_torch(checkpoint, path)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        """Lightning's load of ``path``, checked (see the class): a damaged file, or one that is
        not a checkpoint, raises :class:`~tcl_ssl.safe_io.DamagedFileError` naming it."""
        if "://" in str(path):
            return super().load_checkpoint(path, *args, **kwargs)
        path = Path(os.fspath(path))
        if not _verified_unchanged(path):
            check_archive(path, RESUME_ADVICE)
        checkpoint = super().load_checkpoint(path, *args, **kwargs)
        _check_keys(path, checkpoint, RESUME_ADVICE)
        return checkpoint


class LastCheckpoint(Checkpoint):
    """Writes ``directory/last.ckpt`` (through ``trainer.save_checkpoint``) at the end of every
    epoch and, if ``every_n_steps`` > 0, every that many optimiser steps.

    One file with both triggers: a ``ModelCheckpoint`` takes one trigger, and two of them saving
    ``last`` write ``last.ckpt`` and ``last-v1.ckpt`` in turns. As a ``Checkpoint``, Lightning
    runs it after the other callbacks, so the epoch's metrics and states are in the file. No
    checkpoint is written while a :class:`NonFiniteLossGuard` says it is unsafe.

    Args:
        directory: the folder of ``last.ckpt``.
        every_n_steps: also save every that many optimiser steps; ``0``: at epoch ends only.

    Raises:
        ValueError: when ``every_n_steps`` is negative.
    """

    def __init__(self, directory: str | Path, every_n_steps: int = 0) -> None:
        if every_n_steps < 0:
            raise ValueError(f"checkpoint every_n_steps must be >= 0, got {every_n_steps}")
        self.path = Path(directory) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self._saved_step = -1

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.global_step == self._saved_step:
            return
        # Trainer.callbacks is set by Lightning's callback connector, not declared on the class
        callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]
        if not all(guard.safe_to_save(trainer) for guard in callbacks if isinstance(guard, NonFiniteLossGuard)):
            return  # the next trigger saves
        trainer.save_checkpoint(self.path)
        self._saved_step = trainer.global_step


class ResumeState(Callback):
    """Saves the random generators' states and the training loader's position with each
    checkpoint, and restores both when a resumed run starts training.

    The loader's position would be Lightning's to restore, but Lightning loads it only when the
    training loader is first built after the checkpoint, and our methods build it earlier (their
    schedules ask for ``trainer.estimated_stepping_batches``).
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        """Every process's random states (gathered: each process draws its own augmentations) and
        the loader's position; tensors, numbers, tuples and lists only, so that
        ``torch.load(weights_only=True)`` reads it. Lightning calls it on every process."""
        loader = self._trainer.train_dataloader if self._trainer is not None else None
        ranks: list[dict[str, Any] | None] = [_random_state()]
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
        ):
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, _random_state())
        return {"ranks": ranks, "loader": loader.state_dict() if isinstance(loader, _Stateful) else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the checkpoint is loaded and before the first batch is drawn and augmented (in
        # the method's on_after_batch_transfer, before any batch hook of a callback)
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        loader = trainer.train_dataloader
        if state.get("loader") is not None and isinstance(loader, _Stateful):
            loader.load_state_dict(state["loader"])
        ranks = state.get("ranks", [])
        if len(ranks) == trainer.world_size:
            _set_random_state(ranks[trainer.global_rank])
        else:
            log.warning(
                "the checkpoint holds the random states of %d processes, this run has %d: each process keeps "
                "its fresh seed, so augmentations will differ from an uninterrupted run",
                len(ranks),
                trainer.world_size,
            )


def _random_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    assert isinstance(numpy_state, tuple)  # the legacy MT19937 state: (kind, keys, position, has_gauss, gauss)
    kind, keys, position, has_gauss, gauss = numpy_state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)),
        "python": random.getstate(),
    }


def _set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])  # the current device's
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the message names the step and what to try."""


class NonFiniteLossGuard(Callback):
    """Raises :class:`NonFiniteLossError` when a training step's loss is not finite.

    On a GPU the check of step ``n`` is read at step ``n + 1`` (a copy to pinned memory behind an
    event), so it never waits for the step in flight; a checkpoint is refused while a check is
    pending, so no checkpoint holds weights after a non-finite loss. Under a float16 GradScaler,
    a non-finite loss is what the scaler handles by skipping the step and lowering its scale, so
    the run stops only after :data:`SCALER_PATIENCE` such steps in a row.

    Args:
        patience_with_scaler: non-finite losses in a row that a float16 GradScaler may skip
            before the run stops.
    """

    def __init__(self, patience_with_scaler: int = SCALER_PATIENCE) -> None:
        self.patience_with_scaler = patience_with_scaler
        self._pending: tuple[torch.Tensor, torch.cuda.Event | None, int] | None = None
        self._streak = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        self._resolve(trainer)
        finite = torch.isfinite(loss.detach()).all()
        if trainer.world_size > 1:  # every process takes the same decision (asynchronous on a GPU)
            flag = finite.to(torch.int32)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            finite = flag.bool()
        if finite.is_cuda:
            host = torch.empty((), dtype=torch.bool, pin_memory=True)
            host.copy_(finite, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (host, event, trainer.global_step)
        else:
            self._pending = (finite, None, trainer.global_step)
            self._resolve(trainer)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._resolve(trainer)  # before the file is written

    def safe_to_save(self, trainer: pl.Trainer) -> bool:
        """Whether the last step's loss was finite (checked now); ``False`` while a GradScaler is
        skipping steps, whose forward passes may have left non-finite BatchNorm statistics."""
        self._resolve(trainer)
        return self._streak == 0

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._resolve(trainer)

    def _resolve(self, trainer: pl.Trainer) -> None:
        if self._pending is None:
            return
        finite, event, step = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        if bool(finite):
            self._streak = 0
            return
        self._streak += 1
        if _has_grad_scaler(trainer) and self._streak < self.patience_with_scaler:
            return  # the scaler skips this step and lowers its scale
        raise NonFiniteLossError(
            f"the training loss became NaN or inf at step {step}"
            + (f" ({self._streak} steps in a row under the float16 GradScaler)" if self._streak > 1 else "")
            + "; the last checkpoint holds the weights before it. Try a lower --lr, a higher --temperature, "
            "or --precision 32-true (or bf16-mixed) instead of 16-mixed."
        )


def _has_grad_scaler(trainer: pl.Trainer) -> bool:
    return getattr(trainer.precision_plugin, "scaler", None) is not None

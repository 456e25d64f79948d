"""The processes of a multi-process (DDP) run: which one this is, and the launcher's wait for the others.

Lightning starts the processes of ``--strategy ddp`` by running the same command line again
with ``LOCAL_RANK`` set (:class:`lightning_fabric.strategies.launchers.subprocess_script._SubprocessScriptLauncher`);
process 0 is the one the user started. Lightning watches those child processes only while
process 0 still runs, so one that fails after process 0 is done would go unnoticed:
:func:`adopt_children` remembers them and :func:`wait_for_children`, called by the command line
before it exits, waits for each and names any that failed. Nothing here imports torch.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "ChildEnd",
    "adopt_children",
    "end_process_group",
    "end_process_group_at_exit",
    "is_process_zero",
    "share_from_process_zero",
    "wait_for_children",
]

#: the environment variables that hold a process's global rank, as launchers set them
_GLOBAL_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")

#: the child processes this process started, by local rank
_children: dict[int, subprocess.Popen[Any]] = {}

#: whether :func:`end_process_group_at_exit` has registered its hook
_end_registered = False


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value is not None and value.strip().isdigit() else None


def is_process_zero() -> bool:
    """Whether this is process 0 of a multi-process run, or the only process: the one that
    prints and writes. The global rank where the launcher sets one (``RANK``, SLURM, JSM);
    otherwise local rank 0 (``LOCAL_RANK``) on node 0 (``NODE_RANK``/``GROUP_RANK``), as
    Lightning starts the processes of each node."""
    for name in _GLOBAL_RANK_VARIABLES:
        rank = _env_int(name)
        if rank is not None:
            return rank == 0
    node = _env_int("NODE_RANK")
    if node is None:
        node = _env_int("GROUP_RANK")
    return (_env_int("LOCAL_RANK") or 0) == 0 and (node or 0) == 0


def share_from_process_zero(value: T) -> T:
    """Process 0's ``value`` on every process of a multi-process job (a broadcast over torch's
    default process group; ``value`` must pickle); ``value`` itself when no group of more than
    one process is up."""
    distributed = sys.modules.get("torch.distributed")  # torch only if the command imported it
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return value
    if distributed.get_world_size() == 1:
        return value
    box = [value]
    distributed.broadcast_object_list(box, src=0)
    shared: T = box[0]
    return shared


def end_process_group() -> None:
    """Destroy torch's default process group, if a multi-process run made one. A process that
    exits with it alive may abort at exit (gloo: ``terminate called without an active exception``,
    exit code -6): rank 1 did so in 2 of 9 runs of ``pytest tests/test_ddp.py -k evaluates_on_all``
    without this call (the machine under load), in none of 10 with it."""
    distributed = sys.modules.get("torch.distributed")  # torch only if the command imported it
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def end_process_group_at_exit() -> None:
    """Call :func:`end_process_group` when the interpreter exits (once, however often this is
    called), so that a script that runs :func:`tcl_ssl.train.pretrain` under DDP and then
    simply ends does not abort at exit."""
    global _end_registered
    if not _end_registered:
        atexit.register(end_process_group)
        _end_registered = True


def adopt_children(trainer: Any) -> None:
    """Remember the processes that ``trainer``'s launcher started (none unless this process
    launched ``--strategy ddp`` children), so that :func:`wait_for_children` can wait for them."""
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    for rank, process in enumerate(getattr(launcher, "procs", None) or [], start=1):
        _children.setdefault(rank, process)


@dataclass(frozen=True)
class ChildEnd:
    """How a child process ended: its local rank, pid and exit code (``None``: still running at
    the deadline, and killed)."""

    rank: int
    pid: int
    code: int | None

    def describe(self) -> str:
        """One line naming the process and how it ended."""
        if self.code is None:
            return (
                f"the process of rank {self.rank} (pid {self.pid}) was still running after process 0, and was stopped"
            )
        return f"the process of rank {self.rank} (pid {self.pid}) failed with exit code {self.code}"


def wait_for_children(timeout: float) -> list[ChildEnd]:
    """Wait up to ``timeout`` seconds in all for the remembered child processes to end.

    Returns:
        The children that failed (non-zero exit code) or were still running at the deadline
        (they are then killed); empty when every child ended with exit code 0.
    """
    deadline = time.monotonic() + timeout
    ends = []
    for rank, process in sorted(_children.items()):
        try:
            code: int | None = process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        if code != 0:
            ends.append(ChildEnd(rank, process.pid, code))
    _children.clear()
    return ends

"""One thread budget for every stage and command.

A command's ``--threads N`` wins, then a config's ``train.num_threads``; else ``OMP_NUM_THREADS``; else the CPUs
this process may run on (``os.sched_getaffinity``), divided by the number of processes of a distributed run.
Spin-waiting compute threads that outnumber the cores slow a shared machine down many times over, so the
budget covers everything: DataLoader workers are taken out of it and torch keeps one inter-op thread.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

_command_line_threads: int | None = None


def set_command_line_threads(threads: int | None) -> None:
    """Record a command's ``--threads N`` (None: not given); it wins over every other source."""
    global _command_line_threads
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    _command_line_threads = threads


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on every platform
        return os.cpu_count() or 1


def env_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive integer, or None when it is unset or not one."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not value:
        return None
    try:
        n = int(value.split(",")[0])  # OpenMP allows a list for nested levels: the first is the outer level
    except ValueError:
        log.warning("OMP_NUM_THREADS=%r is not a thread count; ignored", value)
        return None
    return n if n > 0 else None


def thread_budget(explicit: int | None = None, world_size: int = 1) -> int:
    """The number of threads one process may use (at least 1): ``--threads``, else ``explicit`` (a config's
    value; 0 or None for automatic), else ``OMP_NUM_THREADS``, else the usable CPUs over ``world_size``."""
    if _command_line_threads is not None:
        return _command_line_threads
    if explicit is not None and explicit < 0:
        raise ValueError(f"threads must be >= 0 (0: choose automatically), got {explicit}")
    if explicit:
        return int(explicit)
    from_env = env_threads()
    if from_env is not None:
        return from_env
    return max(1, available_cpus() // max(1, world_size))


def apply_thread_budget(stage: str, explicit: int | None = None, world_size: int = 1, workers: int = 0) -> int:
    """Set torch's intra-op threads to the budget less ``workers`` (at least 1); log it once; return it."""
    import torch

    budget = thread_budget(explicit, world_size)
    intra = max(1, budget - max(0, workers))
    torch.set_num_threads(intra)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # settable once per process, before any inter-op work: an earlier stage did it
        pass
    log.info("%s: %d compute thread(s)%s", stage, intra, f" + {workers} data worker(s)" if workers else "")
    return intra

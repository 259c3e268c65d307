"""One thread budget for every stage, command and runtime session.

A command's ``--threads N`` wins, then an explicit value (``Detector(num_threads=...)``, a training config's
``train.num_threads``), then ``OMP_NUM_THREADS``, then the CPUs this process may run on
(``os.sched_getaffinity``) divided by the number of processes of a distributed run. Compute threads that
outnumber the cores spin-wait against each other and slow a shared machine down many times over.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

_command_line_threads: int | None = None


def set_command_line_threads(threads: int | None) -> None:
    """Record a command's ``--threads N`` (None: not given); it wins over every other source."""
    global _command_line_threads
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"--threads must be >= 1, got {threads!r}")
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
    """The number of threads one process may use (at least 1); ``explicit`` 0 or None means automatic."""
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

"""torch under the one thread budget (:mod:`diffdefect_edge.threads` decides the number).

DataLoader workers are taken out of the budget and torch keeps a single inter-op thread, so that a stage
never runs more compute threads than it was given.
"""

from __future__ import annotations

import logging

from diffdefect_edge.threads import set_command_line_threads, thread_budget

__all__ = ["apply_thread_budget", "set_command_line_threads", "thread_budget"]

log = logging.getLogger(__name__)
_last_logged: tuple[str, int, int] | None = None


def apply_thread_budget(stage: str, explicit: int | None = None, world_size: int = 1, workers: int = 0) -> int:
    """Set torch's intra-op threads to the budget less ``workers`` (at least 1); log it once; return it."""
    import torch

    global _last_logged
    budget = thread_budget(explicit, world_size)
    intra = max(1, budget - max(0, workers))
    torch.set_num_threads(intra)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # settable once per process, before any inter-op work has started
            log.debug("torch's inter-op threads were already fixed at %d", torch.get_num_interop_threads())
    if _last_logged != (stage, intra, workers):
        log.info("%s: %d compute thread(s)%s", stage, intra, f" + {workers} data worker(s)" if workers else "")
        _last_logged = (stage, intra, workers)
    return intra

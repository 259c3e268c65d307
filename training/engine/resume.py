"""Resuming a training run: the state saved at each epoch end, and the one rule for when it is reused.

``resume`` is ``"auto"`` (continue a run made with the same config, refuse one made with another), ``True``
(continue; refuse when there is nothing to continue or the config differs) or ``False`` (start fresh; refuse
to overwrite an existing run). A refusal never deletes anything: the caller chooses a new directory, or the
pipeline's ``--force`` clears the stage first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.engine.checkpoint import load_train_state


class RunExistsError(FileExistsError):
    pass


def resume_state(state_path: Path, config_hash: str, resume: bool | str, run_dir: Path) -> dict[str, Any] | None:
    """The saved training state to resume from, or None to start fresh."""
    if resume not in (True, False, "auto"):
        raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
    if not state_path.is_file():
        if resume is True:
            raise FileNotFoundError(f"{state_path}: nothing to resume")
        return None
    if resume is False:
        raise RunExistsError(f"{run_dir}: already holds a training run; pass --resume to continue it or choose a "
                             "new --out")
    state = load_train_state(state_path)
    if state.get("config_hash") != config_hash:
        raise RunExistsError(f"{run_dir}: the checkpoint there was trained with a different config; use a new "
                             "--out (or rerun the pipeline stage with --force)")
    return state

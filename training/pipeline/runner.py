"""Runs the stages of the main job under one run directory, skipping those already done with the same inputs.

A stage's key covers the config sections it depends on, the data override, the outputs of the upstream
stages it reads (a fingerprint of their files: path, size, modification time) and the code that made it
(package version and the compiled kernels' build). ``RUN/<stage>/stage.json`` records the key of the last
completed run; a stage whose key is unchanged is skipped, so rerunning any stage reruns exactly what depends
on it. A stage interrupted part-way resumes (its ``.running`` marker holds the key it started with); one
whose key changed is cleared first, never resumed from stale outputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from training.config import ExperimentConfig, save_config
from training.engine.threads import apply_thread_budget
from training.pipeline.context import RunContext
from training.pipeline.stages import STAGE_NAMES, STAGES, STAGES_BY_NAME, Stage

log = logging.getLogger(__name__)

MARKER = "stage.json"
RUNNING = ".running"


@functools.cache
def code_version() -> str:
    """The package version plus a digest of the compiled kernels module that computed the outputs."""
    import diffdefect_edge
    from diffdefect_edge import _kernels

    with open(_kernels.__file__, "rb") as f:
        build = hashlib.sha256(f.read()).hexdigest()[:16]
    return f"{diffdefect_edge.__version__}+{build}"


def output_fingerprint(ctx: RunContext, stage: Stage) -> str:
    """A digest of the files a completed stage wrote (relative path, size, mtime); 'missing' if none."""
    h = hashlib.sha256()
    found = False
    for folder in stage.output_dirs:
        root = ctx.stage_dir(folder)
        if not root.is_dir():
            continue
        found = True
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames.sort()
            for name in sorted(filenames):
                if dirpath == str(root) and name in (MARKER, RUNNING):
                    continue
                path = Path(dirpath) / name
                st = path.stat()
                h.update(f"{folder}/{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest() if found else "missing"


def stage_key(ctx: RunContext, stage: Stage) -> str:
    override = str(ctx.data_override.resolve()) if ctx.data_override else None
    upstream = {name: output_fingerprint(ctx, STAGES_BY_NAME[name]) for name in stage.inputs_for(ctx.config)}
    return ctx.config.section_hash(*stage.depends_on, extra={"data_override": override, "upstream": upstream,
                                                             "code": code_version()})


def completed_key(ctx: RunContext, stage: Stage) -> str | None:
    marker = ctx.stage_dir(stage.name) / MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text()).get("key")


# stages whose outputs another run may share through a symlink (the package, report and demo are per run)
LINKABLE_STAGES = ("data", "ddpm", "features", "resvae", "baseline", "continued", "teacher", "distill")


def link_unchanged_stages(source: RunContext, ctx: RunContext) -> list[str]:
    """Symlink the completed stages of ``source`` that ``ctx`` would compute identically (same key); return the
    names of ctx's linked stages (now or before). Call it for each run to link from, in order of preference.
    Nothing already in ctx's run directory is touched."""
    linked = []
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        if stage.name not in LINKABLE_STAGES:
            continue
        target = ctx.stage_dir(stage.name)
        if target.is_symlink() or target.exists():
            if target.is_symlink():
                linked.append(stage.name)
            continue
        if completed_key(source, stage) == stage_key(ctx, stage):
            os.symlink(source.stage_dir(stage.name).resolve(), target, target_is_directory=True)
            linked.append(stage.name)
    return linked


def _clear(ctx: RunContext, stage: Stage) -> None:
    for folder in stage.output_dirs:
        path = ctx.stage_dir(folder)
        if path.is_symlink():  # an ablation variant's link to the base run: never delete through it
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)


def _prepare(ctx: RunContext, stage: Stage, key: str, force: bool) -> None:
    """Keep an interrupted run of the same key (it resumes), clear anything else."""
    running = ctx.stage_dir(stage.name) / RUNNING
    resumable = not force and running.is_file() and running.read_text() == key
    if not resumable:
        _clear(ctx, stage)
    ctx.stage_dir(stage.name).mkdir(parents=True, exist_ok=True)
    (ctx.stage_dir(stage.name) / MARKER).unlink(missing_ok=True)
    running.write_text(key)


def selected_stages(config: ExperimentConfig, stages: list[str] | None) -> set[str]:
    """The named stages (default: all but the optional controls), plus any optional stage one of them reads
    under ``config`` (``distill.teacher: continued`` reads the continued baseline)."""
    selected = set(stages) if stages else {s.name for s in STAGES if not s.optional}
    return selected | {name for s in STAGES if s.name in selected for name in s.inputs_for(config)
                       if STAGES_BY_NAME[name].optional}


def run_pipeline(config: ExperimentConfig, run_dir: str | Path, stages: list[str] | None = None,
                 data_override: str | Path | None = None, force: bool = False,
                 reuse: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Run the named stages (default: all but the optional controls) in order; skip those already done with the
    same inputs.

    ``force`` reruns the named stages from scratch: each one's outputs are cleared first. ``reuse`` names another
    run directory whose completed stages this run would compute identically: they are linked, not recomputed
    (e.g. a teacher experiment on the DDPM, features and baseline of an earlier run).
    """
    unknown = set(stages or []) - set(STAGE_NAMES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {STAGE_NAMES}")
    ctx = RunContext(config, Path(run_dir), Path(data_override) if data_override else None)
    if reuse is not None:
        source = RunContext(config, Path(reuse), ctx.data_override)
        if not source.run_dir.is_dir():
            raise FileNotFoundError(f"reuse: no run directory {source.run_dir}")
        if source.run_dir.resolve() == ctx.run_dir.resolve():
            raise ValueError(f"reuse: {source.run_dir} is the run directory itself")
        log.info("reused from %s: %s", source.run_dir, link_unchanged_stages(source, ctx))
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, ctx.run_dir / "config.yaml")
    selected = selected_stages(config, stages)
    results: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        if stage.name not in selected:
            continue
        key = stage_key(ctx, stage)
        ctx.keys[stage.name] = key
        marker = ctx.stage_dir(stage.name) / MARKER
        if not force and completed_key(ctx, stage) == key:
            log.info("stage %s: already done with these inputs, skipped", stage.name)
            results[stage.name] = {**json.loads(marker.read_text())["result"], "skipped": True}
            continue
        _prepare(ctx, stage, key, force)
        start = time.perf_counter()
        log.info("stage %s: running", stage.name)
        apply_thread_budget(stage.name, config.train.num_threads or None)
        result = stage.fn(ctx)
        elapsed = time.perf_counter() - start
        marker.write_text(json.dumps({"key": key, "seconds": round(elapsed, 3), "result": result}, indent=1))
        (ctx.stage_dir(stage.name) / RUNNING).unlink()
        results[stage.name] = {**result, "seconds": round(elapsed, 3)}
    return results

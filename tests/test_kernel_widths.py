"""The AVX-512 variant's code paths (16 lanes: other tile sizes and register blockings) on any x86 machine.

The kernels are written once over a GCC vector of V floats; here they are compiled with V = 16 but only AVX2
instructions (GCC splits each vector op), and checked against double-precision direct references in C++.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_sixteen_lane_kernels_match_direct_references(tmp_path: Path):
    exe = tmp_path / "emulated_width"
    build = subprocess.run(
        ["g++", "-O2", "-std=c++17", "-fopenmp", "-mavx2", "-mfma", "-Wno-psabi", "-DDDE_VBYTES=64",
         f"-I{CSRC}", str(CSRC / "tests" / "emulated_width.cpp"), str(CSRC / "fft_plan.cpp"), "-o", str(exe)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all ok" in run.stdout

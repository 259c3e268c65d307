"""The compiled module, its build facts, and the torch-free runtime import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

from diffdefect_edge import kernels


def test_build_info_reports_compiler_threads_simd_and_cuda():
    info = kernels.build_info()
    assert info["compiler"].startswith(("GNU", "Clang", "AppleClang", "MSVC"))
    assert isinstance(info["openmp_max_threads"], int) and info["openmp_max_threads"] >= 1
    assert isinstance(info["simd_compiled"], list) and isinstance(info["simd_runtime"], list)
    assert isinstance(info["cuda_compiled"], bool)
    assert isinstance(info["cuda_device_count"], int) and info["cuda_device_count"] >= 0
    if not info["cuda_compiled"]:
        assert info["cuda_device_usable"] is False and info["cuda_device_count"] == 0
    if info["cuda_device_usable"]:
        assert info["cuda_device_count"] >= 1 and info["cuda_device_name"]


def test_cuda_compiled_where_nvcc_exists():
    """CI has nvcc: the CUDA sources must have been compiled there (unless explicitly turned off)."""
    import shutil

    import pytest

    if shutil.which("nvcc") is None or os.environ.get("DDE_CUDA", "AUTO").upper() == "OFF":
        pytest.skip("no nvcc on PATH (or DDE_CUDA=OFF): CUDA sources are not compiled here")
    info = kernels.build_info()
    assert info["cuda_compiled"], info
    assert info["cuda_compiler"].startswith("NVIDIA")


def test_no_device_means_not_usable_and_import_still_works():
    info = kernels.build_info()
    assert kernels.cuda_available() == (info["cuda_compiled"] and info["cuda_device_usable"])


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_runtime_imports_with_torch_unimportable():
    # sys.modules["torch"] = None makes every `import torch` raise ImportError
    code = ("import sys; sys.modules['torch'] = None\n"
            "import diffdefect_edge, diffdefect_edge.kernels, diffdefect_edge.cli\n"
            "print(diffdefect_edge.__version__, diffdefect_edge.kernels.build_info()['compiler'])")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(__import__("diffdefect_edge").__version__)


def test_runtime_import_does_not_load_torch():
    proc = _run("import sys, diffdefect_edge, diffdefect_edge.kernels, diffdefect_edge.cli; "
                "print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_sdk_cli_prints_build_info_json():
    proc = subprocess.run([sys.executable, "-m", "diffdefect_edge.cli", "build-info"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "cuda_compiled" in json.loads(proc.stdout)


def test_training_help_lists_commands():
    proc = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("data", "run"):
        assert command in proc.stdout

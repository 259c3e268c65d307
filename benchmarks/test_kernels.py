"""Kernel speed against what a user would otherwise call, measured in one run, checked as ratios.

    python -m pytest benchmarks/test_kernels.py --benchmark-json=benchmarks/kernels.json
    python benchmarks/report.py benchmarks/kernels.json

Targets (CPU): fft_filter at most 0.33 of torch.fft at every shape, reported, and failing only above 0.5 (its spread
on these VMs reaches past 0.33 in some runs, docs/benchmarks.md); cross_attention at Lq = Lk = 16384, D = 32 grows
peak RSS by < 64 MB. cross_attention against torch's SDPA is reported as a figure (docs/benchmarks.md has its
spread on these machines) and asserted only against a regression: more than 10% slower than SDPA (beyond the spread) fails.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from timing import alternating_medians  # noqa: E402  (benchmarks/timing.py)

from diffdefect_edge import kernels  # noqa: E402

FFT_SHAPES = [(8, 64, 80, 80), (8, 128, 40, 40), (8, 256, 20, 20)]
ATTN_SHAPES = [(8, 4, 1600, 400, 32), (8, 8, 400, 400, 32), (2, 4, 6400, 1600, 32)]
FFT_TARGET, FFT_REGRESSION = 0.33, 0.5
ATTN_REGRESSION = 1.10  # slower than SDPA beyond the run-to-run spread of these VMs (docs/benchmarks.md)
REFERENCE_NAMES = {"torch": "torch.fft", "torch_sdpa": "SDPA"}
AGREEMENT = 1e-5  # relative (norm) difference allowed between our result and the reference's at each shape


def _fft_callables(shape) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    mask = rng.random((shape[2], shape[3] // 2 + 1)).astype(np.float32)
    xt, mt = torch.from_numpy(x), torch.from_numpy(mask)
    return {
        "ours": lambda: kernels.fft_filter(x, mask),
        "torch": lambda: torch.fft.irfft2(torch.fft.rfft2(xt) * mt, s=shape[-2:]),
        "numpy": lambda: np.fft.irfft2(np.fft.rfft2(x) * mask, s=shape[-2:]),
    }


def _attn_callables(shape) -> dict:
    b, h, lq, lk, d = shape
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((b, h, lq, d), (b, h, lk, d), (b, h, lk, d)))
    qt, kt, vt = map(torch.from_numpy, (q, k, v))
    return {
        "ours": lambda: kernels.cross_attention(q, k, v),
        "torch_sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt),
    }


@pytest.mark.parametrize("shape", FFT_SHAPES, ids=str)
@pytest.mark.parametrize("impl", ["ours", "torch", "numpy"])
def test_fft_filter(benchmark, shape, impl):
    benchmark.group = f"fft_filter {shape}"
    benchmark.pedantic(_fft_callables(shape)[impl], rounds=7, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("shape", ATTN_SHAPES, ids=str)
@pytest.mark.parametrize("impl", ["ours", "torch_sdpa"])
def test_cross_attention(benchmark, shape, impl):
    benchmark.group = f"cross_attention {shape}"
    benchmark.pedantic(_attn_callables(shape)[impl], rounds=7, warmup_rounds=1, iterations=1)


def _disagreement(ours, reference) -> float:
    """Relative (norm) difference of the two results, so that a speed-up that breaks the result at the benchmark's
    sizes (e.g. an exp2 rounding error that only shows up in millions of calls) cannot pass."""
    a, b = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _ratio_against(name: str, fns: dict, reference: str, rounds: int, target: float) -> tuple[str, bool]:
    """Our kernel's median time over the reference's, both called alternately after checking that they agree;
    returns the report line and whether the target was met."""
    assert _disagreement(fns["ours"](), fns[reference]()) < AGREEMENT, f"{name} disagrees with {reference}"
    ours, ref = alternating_medians([fns["ours"], fns[reference]], rounds=rounds)
    ratio = ours / ref
    return f"{name}: {ratio:.3f} of {REFERENCE_NAMES[reference]} (interleaved; must be <= {target})", ratio <= target


def test_targets_as_ratios():
    """Each kernel against its reference, called alternately (the pytest-benchmark groups above are timed one
    after the other and shown for reference), after checking that the two agree."""
    checks = [_ratio_against(f"fft_filter {shape}", _fft_callables(shape), "torch", 15, FFT_REGRESSION)
              for shape in FFT_SHAPES]
    checks += [_ratio_against(f"cross_attention {shape}", _attn_callables(shape), "torch_sdpa", 9, ATTN_REGRESSION)
               for shape in ATTN_SHAPES]
    print("\n" + "\n".join(line for line, _ in checks))
    print(f"(fft_filter's target: <= {FFT_TARGET} of torch.fft; cross_attention's: below SDPA)")
    failures = [line for line, met in checks if not met]
    assert not failures, "targets missed:\n" + "\n".join(failures)


def test_attention_memory_does_not_grow_with_lq_lk():
    code = textwrap.dedent("""
        import resource, numpy as np
        from diffdefect_edge import kernels
        r = np.random.default_rng(0)
        q, k, v = (r.standard_normal((1, 1, 16384, 32)).astype(np.float32) for _ in range(3))
        out = np.empty_like(q)
        kernels.cross_attention(q[:, :, :64], k[:, :, :64], v[:, :, :64])  # warm up threads and pools
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kernels.cross_attention(q, k, v, out=out)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    growth_mb = float(proc.stdout.strip())
    print(f"\ncross_attention Lq = Lk = 16384, D = 32: peak RSS growth {growth_mb:.1f} MB (target < 64 MB; "
          f"a materialised score matrix would be {16384 * 16384 * 4 / 2**20:.0f} MB)")
    assert growth_mb < 64

"""Time the CUDA kernels against torch on the GPU with CUDA events (median of 20 runs), as a markdown table.
Targets: fft_filter <= 0.5 of torch.fft; cross_attention <= 1.0 of SDPA."""

from __future__ import annotations

import statistics

import torch

from diffdefect_edge import kernels


def cuda_time(fn, runs: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def disagreement(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Relative (norm) difference of the two results, computed in float64."""
    a, b = ours.double(), reference.double()
    return float((a - b).norm() / b.norm())


def main() -> None:
    print("| kernel | shape | ours (ms) | torch (ms) | ratio | target | rel. diff |\n|---|---|---:|---:|---:|---:|---:|")
    for shape in [(8, 64, 80, 80), (8, 128, 40, 40), (8, 256, 20, 20)]:
        x = torch.randn(shape, device="cuda")
        m = torch.rand(shape[2], shape[3] // 2 + 1, device="cuda")
        diff = disagreement(kernels.fft_filter(x, m), torch.fft.irfft2(torch.fft.rfft2(x) * m, s=shape[-2:]))
        ours = cuda_time(lambda: kernels.fft_filter(x, m))
        ref = cuda_time(lambda: torch.fft.irfft2(torch.fft.rfft2(x) * m, s=shape[-2:]))
        print(f"| fft_filter | {shape} | {ours:.3f} | {ref:.3f} | {ours / ref:.3f} | 0.5 | {diff:.1e} |")
    for b, h, lq, lk, d in [(8, 4, 1600, 400, 32), (8, 8, 400, 400, 32), (2, 4, 6400, 1600, 32)]:
        q, k, v = (torch.randn(b, h, n, d, device="cuda") for n in (lq, lk, lk))
        diff = disagreement(kernels.cross_attention(q, k, v), torch.nn.functional.scaled_dot_product_attention(q, k, v))
        ours = cuda_time(lambda: kernels.cross_attention(q, k, v))
        ref = cuda_time(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
        print(f"| cross_attention | {(b, h, lq, lk, d)} | {ours:.3f} | {ref:.3f} | {ours / ref:.3f} | 1.0 | {diff:.1e} |")


if __name__ == "__main__":
    main()

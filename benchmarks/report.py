"""Turn a pytest-benchmark JSON file into a markdown table with ratios to the reference of each group.

    python benchmarks/report.py benchmarks/kernels.json > benchmarks/kernels.md
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

REFERENCES = ("torch", "torch_sdpa", "raw", "sync", "warm")  # the first one present in a group is the denominator


def main(path: str) -> str:
    data = json.loads(open(path).read())
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        impl = bench["params"].get("impl", bench["name"]) if bench.get("params") else bench["name"]
        groups[bench["group"] or bench["name"]][impl] = bench["stats"]["median"]
    machine = data.get("machine_info", {})
    lines = [f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, {machine.get('cpu', {}).get('count', '?')} "
             f"logical CPUs; {data.get('datetime', '')}", "", "| group | impl | median (ms) | ratio to reference |",
             "|---|---|---:|---:|"]
    for group, impls in groups.items():
        ref_name = next((r for r in REFERENCES if r in impls), None)
        for impl, median in impls.items():
            ratio = f"{median / impls[ref_name]:.3f}" if ref_name else "-"
            lines.append(f"| {group} | {impl} | {median * 1e3:.2f} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/report.py BENCHMARK.json")
    print(main(sys.argv[1]))

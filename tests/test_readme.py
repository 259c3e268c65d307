"""The README's SDK snippet runs as written (only the package path and the image are this test's)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def _sdk_snippet() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Detect defects in your code", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README has no python block in its SDK section"
    return match.group(1)


def test_readme_sdk_snippet_runs(tiny_package: Path, tiny_dataset: Path, tmp_path: Path):
    snippet = _sdk_snippet()
    assert len(snippet.strip().splitlines()) <= 12  # "the SDK in ten lines"
    assert '"runs/quickstart/package"' in snippet and '"part.png"' in snippet
    image = sorted((tiny_dataset / "JPEGImages").iterdir())[0]
    shutil.copy(image, tmp_path / "part.png")
    code = snippet.replace('"runs/quickstart/package"', repr(str(tiny_package)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "part_checked.png").is_file()

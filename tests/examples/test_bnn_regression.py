"""The README's main job runs end to end (tiny settings) and writes its figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bnn_regression.py"


def test_example_quick_run_writes_png(tmp_path):
    out = tmp_path / "fig.png"
    res = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.stat().st_size > 10_000
    assert "== NUTS" in res.stdout and "== SVI" in res.stdout and "r_hat" in res.stdout

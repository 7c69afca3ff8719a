"""The ``bayesnets`` command: ``lc extrapolate`` prints a quantile table and writes a PNG; malformed
CSV files fail with a clear message and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bayesnets.cli import main, read_curves
from priors.tasks import LearningCurvePrior

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "bayesnets.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def _prior_curves(k: int, n: int) -> torch.Tensor:
    _, y = LearningCurvePrior().double().sample(k, 100, generator=torch.Generator().manual_seed(9))
    return y[:, :n]


def test_extrapolate_prints_a_table_and_writes_a_png(tmp_path: Path) -> None:
    y = _prior_curves(2, 30)
    csv = tmp_path / "curves.csv"
    # A header row, two curves of different lengths (the shorter one's trailing cells empty).
    lines = ["run_a,run_b"] + [f"{float(y[0, i]):.6f},{float(y[1, i]):.6f}" if i < 20 else f"{float(y[0, i]):.6f},"
                               for i in range(30)]
    csv.write_text("\n".join(lines) + "\n")
    png = tmp_path / "out.png"
    res = _run("lc", "extrapolate", str(csv), "--horizon", "100", "--epochs", "40,100", "--png", str(png))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "run_a: 30 epochs observed, predicting 31..100" in out and "run_b: 20 epochs observed" in out
    assert "q0.05" in out and "q0.95" in out and "mean" in out
    table = [line.split() for line in out.splitlines() if line.strip().startswith(("40 ", "100 "))]
    assert len(table) == 4  # epochs 40 and 100 for each curve
    for row in table:
        q = [float(v) for v in row[2:]]
        assert q == sorted(q) and all(-0.5 < v < 1.5 for v in q)  # ordered quantiles on the curve's scale
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000


def test_text_in_a_value_column_fails_with_exit_code_2(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("acc\n0.5\n0.6\nhigh\n0.7\n")
    res = _run("lc", "extrapolate", str(csv))
    assert res.returncode == 2
    assert "line 4, column 'acc': 'high' is not a number" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("\n\n", "is empty"),
    ("\n".join(str(0.3 + 0.001 * i) for i in range(101)) + "\n", "has 101 epochs; LC-PFN supports curves of at most"),
    ("0.3,0.4\n0.35,\n0.4,0.5\n", "empty cell at line 2 inside the curve"),
    ("0.3\nnan\n", "not a finite number"),
    ("acc\n", "column 'acc' has no values"),
])
def test_malformed_files_fail_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture, content: str,
                                               message: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    assert main(["lc", "extrapolate", str(csv), "--png", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayesnets: error:") and message in err
    assert not (tmp_path / "x.png").exists()


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text("\n".join(f"{v:.4f}" for v in _prior_curves(1, 50)[0].tolist()) + "\n")
    assert main(["lc", "extrapolate", str(csv), "--horizon", "50"]) == 2  # nothing left to predict
    assert "--horizon (50) must be later" in capsys.readouterr().err
    assert main(["lc", "extrapolate", str(tmp_path / "missing.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: unknown subcommand
        main(["lc", "fit", str(csv)])
    assert exc.value.code == 2


def test_loss_curves_and_headerless_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    loss = 2.0 * (1.0 - _prior_curves(1, 25)[0])  # a loss on [0, 2]: lower is better
    csv = tmp_path / "loss.csv"
    csv.write_text("\n".join(f"{v:.5f}" for v in loss.tolist()) + "\n")
    assert list(read_curves(csv)) == ["curve1"] and len(read_curves(csv)["curve1"]) == 25
    assert main(["lc", "extrapolate", str(csv), "--metric", "loss", "--upper", "2", "--epochs", "100"]) == 0
    out = capsys.readouterr().out
    assert "curve1: 25 epochs observed" in out and (tmp_path / "loss.png").exists()
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("100 "))
    assert all(0.0 <= float(v) <= 2.5 for v in row[1:])

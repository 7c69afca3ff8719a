"""``bayesnets bo``: runs surrogates over seeds, prints a summary table, writes the JSON records and the
regret PNG; unknown problem or surrogate names exit with code 2 and list the valid ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bayesnets.bo import PROBLEMS, load_records
from bayesnets.cli import main
from bayesnets.surrogates import SURROGATES

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bo_prints_a_table_and_writes_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results"
    code = main(["bo", "--problem", "branin", "--surrogates", "gp", "--seeds", "2", "--iterations", "2",
                 "--num-init", "5", "--out", str(out), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("surrogate"))
    assert "final simple regret (mean ± se)" in lines[header] and "total s/it" in lines[header]
    row = lines[header + 1].split()
    assert row[0] == "gp" and row[1] == "2" and row[3] == "±"
    records = load_records(out / "branin.json")
    assert [(r.surrogate, r.seed) for r in records] == [("gp", 0), ("gp", 1)]
    assert all(r.X.shape == (7, 2) and len(r.regret) == 3 for r in records)
    # The table's final regret is the mean over the two seeds of the records' last regret.
    mean = sum(r.regret[-1] for r in records) / 2
    assert float(row[2]) == pytest.approx(mean, rel=1e-3)
    assert (out / "branin.png").read_bytes()[:8] == PNG_MAGIC


def test_fit_warnings_are_counted_under_the_table(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from bayesnets.surrogates import registry

    def warning_gp(train_X, train_Y, *, seed=0, **options):
        warnings.warn("7 of 80 draws after warm-up ended in a divergent transition", RuntimeWarning, stacklevel=2)
        return registry.fit_single_task_gp(train_X, train_Y, seed=seed, **options)

    monkeypatch.setitem(registry.SURROGATES, "gp", warning_gp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["bo", "--problem", "branin", "--surrogates", "gp", "--seeds", "1", "--iterations", "2",
                     "--num-init", "4", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    assert not [w for w in caught if "surrogate fit warned" in str(w.message)]  # counted, not printed per run
    assert "note: gp's fit warned in 2 of 2 iterations" in capsys.readouterr().out


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "bayesnets.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_unknown_problem_exits_2_and_lists_the_problems() -> None:
    res = _run("bo", "--problem", "rosenbrock")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "unknown problem 'rosenbrock'" in res.stderr and all(name in res.stderr for name in PROBLEMS)


def test_unknown_surrogate_exits_2_and_lists_the_surrogates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["bo", "--surrogates", "gp,kriging", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown surrogate(s) 'kriging'" in err and all(name in err for name in SURROGATES)
    assert not list(tmp_path.iterdir())  # nothing ran


def test_bad_counts_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bo", "--surrogates", "gp", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err

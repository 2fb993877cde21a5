"""`python -m bench NAME [--quick]`: the benchmark's table first, its dict as JSON on the last stdout line."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import bench.__main__ as dispatcher

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def fake_bench(monkeypatch):
    calls = []

    def main(quick: bool) -> dict:
        calls.append(quick)
        print("metric   value")
        print("speed    1.5")
        return {"speed": 1.5, "nan_is_null": float("nan"), "nested": {"t": (1, 2)}, "quick": quick}

    module = types.ModuleType("bench.fake")
    module.main = main
    monkeypatch.setitem(sys.modules, "bench.fake", module)
    monkeypatch.setattr(dispatcher, "available", lambda: ["fake", "toyworld"])
    return calls


def test_dispatcher_prints_the_result_as_json_on_the_last_line(fake_bench, capsys):
    assert dispatcher.main(["fake", "--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "metric   value"  # the human table comes first
    assert json.loads(lines[-1]) == {"speed": 1.5, "nan_is_null": None, "nested": {"t": [1, 2]}, "quick": True}
    assert fake_bench == [True]
    dispatcher.main(["fake"])
    assert fake_bench == [True, False]


def test_dispatcher_rejects_unknown_names_and_non_dict_results(fake_bench, monkeypatch):
    with pytest.raises(SystemExit) as exc:
        dispatcher.main(["nope"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        dispatcher.main(["../etc"])
    sys.modules["bench.fake"].main = lambda quick: [1, 2]
    with pytest.raises(TypeError):
        dispatcher.main(["fake"])


def test_available_lists_the_bench_modules():
    names = dispatcher.available()
    assert "toyworld" in names
    assert not any(n.startswith("_") for n in names)


def test_module_entry_point_runs_as_python_dash_m():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "does_not_exist"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "unknown benchmark" in proc.stderr and "toyworld" in proc.stderr

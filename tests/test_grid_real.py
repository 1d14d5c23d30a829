"""The CPU grid for real: Docker Compose, real vLLM CPU, one deployment per profile, ranked by measurement."""

from __future__ import annotations

import json
import time

import pytest

from conftest import REPO, SUITES
from test_compose_backend import leftovers

pytestmark = [pytest.mark.real, pytest.mark.docker]


def test_cpu_grid_ranks_prefix_caching_on_above_off_and_records_the_broken_profile(pytester, tmp_path):
    reports = tmp_path / "reports"
    start = time.monotonic()
    result = pytester.runpytest_subprocess(
        str(SUITES / "medium" / "test_health.py"), str(SUITES / "medium" / "test_kv_cache.py"),
        "--profile=cpu_grid_*", "--grid-baseline=cpu_grid_prefix_off", f"--reports-dir={reports}",
        "--no-history", "-p", "no:cacheprovider", "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"),
        timeout=1800)
    wall = time.monotonic() - start
    rows = {r["profile"]: r for r in json.loads((reports / "grid-report.json").read_text())["rows"]}
    order = [r["profile"] for r in json.loads((reports / "grid-report.json").read_text())["rows"]]
    print(f"\nREAL CPU grid: {wall:.0f}s in all; per profile: "
          + ", ".join(f"{n} {r['duration_s']}s" for n, r in rows.items()))
    print((reports / "grid-report.md").read_text())
    assert set(rows) == {"cpu_grid_broken", "cpu_grid_chunked_off", "cpu_grid_prefix_off", "cpu_grid_prefix_on"}
    on, off = rows["cpu_grid_prefix_on"], rows["cpu_grid_prefix_off"]
    assert on["prefix_caching_effective"] is True and off["prefix_caching_effective"] is False
    assert on["acceleration"] > 2 * off["acceleration"], (on, off)
    assert order.index("cpu_grid_prefix_on") < order.index("cpu_grid_prefix_off")
    # The seeds' trap: no prefix-caching flag, yet the engine caches (V1 default), and the report says so.
    assert rows["cpu_grid_chunked_off"]["prefix_caching_effective"] is True
    broken = rows["cpu_grid_broken"]
    assert broken["status"] == "deploy_failed" and broken["duration_s"] < 30, broken
    assert "max_model_len" in broken["cause"], broken["cause"]
    assert order[-1] == "cpu_grid_broken"
    assert (reports / "grid-report.png").stat().st_size > 5000
    assert [x for name in rows for x in leftovers(name)] == []
    assert result.ret == 1  # the broken profile fails the run, as it should in CI

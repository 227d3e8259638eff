"""The README's demo: real dlt pipelines into DuckDB, chained to a report, under `headwater up`."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.integration.harness import Server, copy_workspace, run_dlthub

pytestmark = pytest.mark.integration

DEMO = Path(__file__).parents[2] / "examples" / "demo"


def test_demo_loads_into_duckdb_and_the_chained_report_builds_tables(tmp_path: Path) -> None:
    ws = copy_workspace(DEMO, tmp_path / "demo")
    srv = Server(ws).start()
    try:
        products = srv.wait_run(srv.start_run("products")["id"], timeout=120)
        assert products["status"] == "completed", srv.logs(products["id"])
        currencies = srv.wait_run(srv.start_run("currencies")["id"], timeout=120)
        assert currencies["status"] == "completed", srv.logs(currencies["id"])
        assert "loaded 6 currencies and 150 rates into raw" in srv.user_output(currencies["id"])
        chained = srv.wait_for(lambda: srv.runs("report"), 30, "report run")
        report = srv.wait_run(chained[0]["id"], timeout=120)
        assert report["status"] == "completed", srv.logs(report["id"])
        assert report["previous_job_run_id"] == currencies["id"]
        # the dbt transform, chained on the same load, waits for the warehouse lock
        transform = srv.wait_run(srv.wait_for(lambda: srv.runs("transform"), 30)[0]["id"], 180)
        assert transform["status"] == "completed", srv.logs(transform["id"])
        spans = sorted((r["started_at"], r["finished_at"]) for r in (report, transform))
        assert spans[0][1] <= spans[1][0], spans
        artifacts = srv.get(f"{srv.w}/job-runs/{transform['id']}/artifacts")
        assert sorted(a["name"] for a in artifacts["items"]) == [
            "manifest.json",
            "run_results.json",
        ]
        dbt = artifacts["dbt"]
        assert dbt["source"] == "dbt_core" and dbt["failures"] is None
        assert dbt["counts"] == {"success": 4, "pass": 7}
        nodes = {row["unique_id"]: row for row in dbt["results"]}
        model = nodes["model.demo_transform.product_prices_eur"]
        assert model["status"] == "success" and model["execution_time"] > 0
        raw = srv.http.get(artifacts["items"][1]["url"], headers=srv.http.headers)
        assert raw.status_code == 200 and raw.json()["results"]
        shown = srv.cli("run", "show", transform["id"]).stdout
        assert "dbt (dbt_core): 4 success, 7 pass" in shown, shown
        assert "model.demo_transform.product_prices_eur" in shown
        # the run's own dbt folder is gone; nothing was written into the project
        assert not (ws / ".headwater" / "runs" / transform["id"]).exists()
        assert not (ws / "transform" / "target").exists()
    finally:
        srv.stop()
    db = duckdb.connect(str(ws / ".dlt" / "data" / "dev" / "demo.duckdb"), read_only=True)
    counts = {
        t: db.execute(f"select count(*) from {t}").fetchone()[0]
        for t in (
            "raw.currencies",
            "raw.rates",
            "raw.products",
            "reporting.latest_rates",
            "analytics.product_prices_eur",
        )
    }
    assert counts == {
        "raw.currencies": 6,
        "raw.rates": 150,
        "raw.products": 20,
        "reporting.latest_rates": 5,
        "analytics.product_prices_eur": 20,
    }
    # dlt kept pipeline state in the workspace, not in its global folder
    assert (ws / ".headwater" / "data" / "pipelines" / "demo_currencies").is_dir()


def test_after_a_dlthub_deploy_into_the_demo_the_report_finds_the_loaded_data(
    tmp_path: Path,
) -> None:
    """The demo's folder served, its data loaded, then its code deployed with `dlthub deploy`
    (from another clone): the report, now run from the package, reads the same database."""
    ws = copy_workspace(DEMO, tmp_path / "demo")
    laptop = copy_workspace(DEMO, tmp_path / "laptop")
    home = tmp_path / "home"
    home.mkdir()
    srv = Server(ws).start()
    try:
        currencies = srv.wait_run(srv.start_run("currencies")["id"], timeout=120)
        assert currencies["status"] == "completed", srv.logs(currencies["id"])
        chained = srv.wait_for(lambda: srv.runs("report"), 30, "report run")
        assert srv.wait_run(chained[0]["id"], timeout=120)["status"] == "completed"
        admin = srv.cli("key", "create", "--name", "laptop", "--scope", "admin").stdout.strip()
        proc = run_dlthub(srv, admin, laptop, home, "deploy", timeout=120)
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
        assert srv.get(srv.w)["manifest"]["code_source"] == "package"
        report = srv.wait_run(srv.start_run("report")["id"], timeout=120)
        assert report["status"] == "completed", srv.logs(report["id"])
        out = "\n".join(srv.user_output(report["id"]))
        assert "built reporting.latest_rates (5 rows)" in out, out
    finally:
        srv.stop()
    packages = ws / ".headwater" / "packages"
    assert not list(packages.rglob("*.duckdb")), list(packages.rglob("*.duckdb"))

"""Runs of one workspace see one data location, wherever their code comes from.

A served workspace runs its job locally, then gets code from `dlthub deploy` (the
official CLI, from another clone of the project), then a local edit moves the code
back: every run appends to the same DuckDB file in the served folder, and each
change of code source is announced in the server log and in the workspace status.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.harness import Server, run_dlthub

pytestmark = pytest.mark.integration

DEPLOYMENT = """
import os

import dlt
import dlt.hub.run as run

SOURCE = "local"


@run.job
def ledger():
    # a file of the job's own in dlt's local dir
    marker = os.path.join(dlt.current.run_context().local_dir, "ledger.txt")
    with open(marker, "a") as f:
        f.write(SOURCE + "\\n")
    with open(marker) as f:
        print("marker=" + ",".join(f.read().split()))
    # a relative path: dlt puts the database in its local dir
    pipeline = dlt.pipeline(
        "ledger", destination=dlt.destinations.duckdb("ledger.duckdb"), dataset_name="book"
    )
    pipeline.run([{"source": SOURCE}], table_name="entries", write_disposition="append")
    with pipeline.sql_client() as client:
        rows = client.execute_sql("SELECT source FROM entries ORDER BY _dlt_load_id")
    print("entries=" + ",".join(r[0] for r in rows))
"""


def make_workspace(path: Path, source: str) -> Path:
    (path / ".dlt").mkdir(parents=True)
    (path / ".dlt" / ".workspace").touch()
    (path / ".dlt" / "config.toml").write_text("[runtime]\ndlthub_telemetry = false\n")
    (path / ".gitignore").write_text(".headwater/\n.dlt/data/\n")
    (path / "__deployment__.py").write_text(
        DEPLOYMENT.replace('SOURCE = "local"', f'SOURCE = "{source}"')
    )
    return path


def run_ledger(srv: Server) -> list[str]:
    """Run the job; answers what it found in the marker file and the database (the same)."""
    run = srv.wait_run(srv.start_run("ledger")["id"], timeout=60)
    out = srv.user_output(run["id"])
    assert run["status"] == "completed", srv.logs(run["id"])
    (marker,) = [x.removeprefix("marker=") for x in out if x.startswith("marker=")]
    (entries,) = [x.removeprefix("entries=") for x in out if x.startswith("entries=")]
    assert marker == entries, out
    return entries.split(",")


def status(srv: Server) -> dict[str, object]:
    return srv.get(srv.w)["manifest"]


def test_runs_keep_one_data_location_across_dlthub_deploy_and_local_edits(
    tmp_path: Path,
) -> None:
    served = make_workspace(tmp_path / "served", "local")
    laptop = make_workspace(tmp_path / "laptop", "package")
    home = tmp_path / "home"
    home.mkdir()
    srv = Server(served).start()
    try:
        local_dir = served / ".dlt" / "data" / "dev"
        before = status(srv)
        assert before["code_source"] == "local", before
        assert before["local_dir"] == str(local_dir), before
        assert run_ledger(srv) == ["local"]
        db = local_dir / "ledger.duckdb"
        assert db.is_file() and (local_dir / "ledger.txt").is_file()
        inode = db.stat().st_ino

        admin = srv.cli("key", "create", "--name", "laptop", "--scope", "admin").stdout.strip()
        proc = run_dlthub(srv, admin, laptop, home, "deploy", timeout=120)
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
        after = status(srv)
        assert after["code_source"] == "package", after
        assert after["code_package_version"] == 1, after
        assert after["local_dir"] == str(local_dir), after
        # the package's code, the served folder's data: the first run's entry is there
        assert run_ledger(srv) == ["local", "package"]
        assert db.stat().st_ino == inode
        packages = served / ".headwater" / "packages"
        assert not [p for p in packages.rglob("ledger*")], list(packages.rglob("*"))
        srv.wait_for(
            lambda: re.search(r"code source: deployment package v1 .*data stays", srv.log()),
            what="the switch to the package, announced",
        )
        # a restart keeps the package's code and the folder's data, and says so
        srv.stop()
        srv.start()
        assert status(srv)["code_source"] == "package"
        assert re.search(r"code source: deployment package v1 .*; data in ", srv.log())
        assert run_ledger(srv) == ["local", "package", "package"]

        # a local edit: the folder's code again, the same data, and the switch is logged
        deployment = served / "__deployment__.py"
        deployment.write_text(deployment.read_text().replace('"local"', '"edited"'))
        srv.wait_for(lambda: status(srv)["code_source"] == "local", what="code back to local")
        assert run_ledger(srv) == ["local", "package", "package", "edited"]
        assert db.stat().st_ino == inode
        srv.wait_for(
            lambda: re.search(r"code source: the workspace folder .*instead of .* v1", srv.log()),
            what="the switch back, announced",
        )
    finally:
        srv.stop()

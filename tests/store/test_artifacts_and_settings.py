"""Job settings from headwater.toml and run artifacts, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

from headwater.store.store import Store
from tests.store.test_store import MODULE, add_jobs, deploy, job_spec, run_request


def test_changed_settings_update_the_job_in_place_without_a_new_version(
    store: Store, ws: str
) -> None:
    spec = job_spec("jobs.m.a")
    job = add_jobs(store, ws, spec)["jobs.m.a"]
    assert job["settings"] == {}

    tuned = dataclasses.replace(spec, settings={"overlap": "replace", "locks": {"wh": 1}})
    _, outcomes = deploy(store, ws, tuned)

    assert outcomes["jobs.m.a"].outcome == "updated"
    again = store.get_job(job["id"])
    assert again is not None
    assert again["settings"] == {"overlap": "replace", "locks": {"wh": 1}}
    assert again["version"] == job["version"]
    _, outcomes = deploy(store, ws, tuned)
    assert outcomes["jobs.m.a"].outcome == "unchanged"


def test_jobs_of_headwater_toml_are_archived_when_the_file_drops_them(
    store: Store, ws: str
) -> None:
    dbt = dataclasses.replace(job_spec("jobs.dbt_cloud.t"), deployment_module="headwater.toml")
    manifest_job = job_spec("jobs.m.a")
    version, outcomes = store.deploy(
        ws, {"jobs": []}, "h1", [], [manifest_job, dbt], MODULE, also_reconcile=("headwater.toml",)
    )
    assert outcomes[1].job["deployment_module"] == "headwater.toml"
    # a manifest deploy that does not reconcile the file leaves its jobs alone
    _, by_ref = deploy(store, ws, manifest_job)
    assert {ref: o.outcome for ref, o in by_ref.items()} == {"jobs.m.a": "unchanged"}
    _, outcomes = store.deploy(
        ws, {"jobs": []}, "h1", [], [manifest_job], MODULE, also_reconcile=("headwater.toml",)
    )
    assert {o.job["job_ref"]: o.outcome for o in outcomes} == {
        "jobs.m.a": "unchanged",
        "jobs.dbt_cloud.t": "archived",
    }


def test_artifacts_are_kept_per_run_and_replaced_by_name(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    run = store.create_run(run_request(job)).run
    assert run is not None

    assert store.save_artifacts(
        run["id"], {"run_results.json": b"{}", "manifest.json": b"[]"}, "dbt_core"
    ) == [
        "manifest.json",
        "run_results.json",
    ]
    store.save_artifacts(run["id"], {"run_results.json": b'{"results": []}'}, "dbt_core")

    listed = store.list_artifacts(run["id"])
    assert [(a["name"], a["size"], a["source"]) for a in listed] == [
        ("manifest.json", 2, "dbt_core"),
        ("run_results.json", 15, "dbt_core"),
    ]
    got = store.get_artifact(run["id"], "run_results.json")
    assert got is not None and bytes(got["content"]) == b'{"results": []}'
    assert store.get_artifact(run["id"], "catalog.json") is None

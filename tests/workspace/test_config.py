"""headwater.toml: validation with key and line, durations, secret references, selectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.workspace.config import (
    ConfigError,
    SecretNotFound,
    parse_config,
    parse_duration,
    resolve_secret,
    settings_for,
)

GOOD = """
[jobs."jobs.__deployment__.load_products"]
overlap = "replace"
run_interval = "30m"
locks = ["warehouse"]

[jobs."tag:ingest"]
overlap = "ignore"
trigger_on_start = false

[locks]
warehouse = 2

[dbt_cloud.connections.prod]
account_id = 12345
token = "secret:DBT_CLOUD_TOKEN"
access_url = "https://emea.dbt.com/"

[[dbt_cloud.jobs]]
name = "transform"
connection = "prod"
job_id = 67890
trigger = ["job.success:jobs.__deployment__.load_products"]
run_interval = "30m"
timeout = "2h"
"""


def test_a_good_file_parses_with_durations_in_seconds() -> None:
    config = parse_config(GOOD)
    assert config.jobs["jobs.__deployment__.load_products"].run_interval == 1800
    assert config.dbt_cloud.jobs[0].timeout == 7200
    assert config.dbt_cloud.jobs[0].job_ref == "jobs.dbt_cloud.transform"
    assert config.dbt_cloud.connections["prod"].access_url == "https://emea.dbt.com"
    assert config.lock_capacity("warehouse") == 2
    assert config.lock_capacity("elsewhere") == 1


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[jobs."a"]\noverlap = "sometimes"\n', ["jobs.a.overlap (line 2)", "skip"]),
        ('[jobs."a"]\n\nrun_intervall = "3m"\n', ["jobs.a.run_intervall (line 3)", "unknown key"]),
        ('[jobs."a"]\nrun_interval = "soon"\n', ["jobs.a.run_interval (line 2)", "'10m'"]),
        (
            '[dbt_cloud.connections.prod]\naccount_id = 1\ntoken = "dbtc_abc123"\n',
            ["dbt_cloud.connections.prod.token (line 3)", "references, never values"],
        ),
        (
            '[dbt_cloud.connections.p]\naccount_id = 1\ntoken = "env:T"\n\n'
            '[[dbt_cloud.jobs]]\nname = "x"\nconnection = "p"\njob_id = 1\n\n'
            '[[dbt_cloud.jobs]]\nname = "y"\nconnection = "p"\njob_id = -4\n',
            ["dbt_cloud.jobs[1].job_id (line 13)"],
        ),
        ("[locks]\nwarehouse = 0\n", ["locks.warehouse (line 2)"]),
        ("[jobs\n", ["not valid TOML", "line 1"]),
    ],
)
def test_a_bad_file_names_the_key_and_its_line(text: str, names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    for name in names:
        assert name in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config('[jobs.a]\noverlap = "x"\nlocks = "w"\n')
    assert len(caught.value.problems) == 2


def test_a_dbt_cloud_job_must_name_a_declared_connection() -> None:
    with pytest.raises(ConfigError, match="connection 'stage'.*prod"):
        parse_config(
            '[dbt_cloud.connections.prod]\naccount_id = 1\ntoken = "env:T"\n'
            '[[dbt_cloud.jobs]]\nname = "x"\nconnection = "stage"\njob_id = 1\n'
        )


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("10m", 600), ("2h", 7200), (90, 90)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_secret_references_resolve_from_env_or_variables_and_say_what_is_missing() -> None:
    variables = {"DBT": "v"}.get
    assert resolve_secret("env:HOME_X", {"HOME_X": "h"}, variables) == "h"
    assert resolve_secret("secret:DBT", {}, variables) == "v"
    with pytest.raises(SecretNotFound, match="dlthub variable set --secret"):
        resolve_secret("secret:NOPE", {}, variables)


def test_settings_apply_by_ref_selector_and_tag_with_the_exact_key_winning() -> None:
    config = parse_config(GOOD)
    jobs = [
        ("jobs.__deployment__.load_products", ["ingest"]),
        ("jobs.__deployment__.currencies", ["ingest"]),
        ("jobs.__deployment__.report", []),
    ]
    settings = settings_for(config, jobs)
    assert settings["jobs.__deployment__.load_products"] == {
        "overlap": "replace",
        "run_interval": 1800.0,
        "trigger_on_start": False,
        "locks": {"warehouse": 2},
    }
    assert settings["jobs.__deployment__.currencies"] == {
        "overlap": "ignore",
        "trigger_on_start": False,
    }
    assert settings["jobs.__deployment__.report"] == {}


def test_a_key_that_selects_no_job_is_an_error() -> None:
    config = parse_config('[jobs."load_prodcts"]\noverlap = "replace"\n')
    with pytest.raises(ConfigError, match="selects no job"):
        settings_for(config, [("jobs.__deployment__.load_products", [])])


def test_only_chains_may_be_added_as_triggers() -> None:
    with pytest.raises(ConfigError, match="only job.success"):
        parse_config('[jobs.a]\ntriggers = ["schedule:* * * * *"]\n')


def test_a_dbt_cloud_jobs_run_interval_debounces_it_like_any_job(tmp_path: Path) -> None:
    from headwater.workspace.launch import job_specs
    from headwater.workspace.manifest import LoadedManifest

    config = parse_config(
        '[dbt_cloud.connections.p]\naccount_id = 1\ntoken = "env:T"\n'
        '[[dbt_cloud.jobs]]\nname = "t"\nconnection = "p"\njob_id = 9\nrun_interval = "30m"\n'
        "trigger_on_start = false\n"
    )
    loaded = LoadedManifest({"jobs": []}, [], "h")
    (spec,) = job_specs(loaded, config)
    assert spec.job_type == "dbt_cloud" and spec.job_ref == "jobs.dbt_cloud.t"
    assert spec.settings == {"run_interval": 1800.0, "trigger_on_start": False}
    assert spec.deployment_module == "headwater.toml"

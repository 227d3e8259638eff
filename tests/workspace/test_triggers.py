"""Job refs, selectors, timeouts and concurrency, through dlt's helpers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.workspace.triggers import (
    DEFAULT_GRACE_PERIOD_S,
    JobRefError,
    concurrency_of,
    matched,
    resolve_ref,
    select,
    timeout_of,
)

SETTINGS = settings(max_examples=150, deadline=None)

identifiers = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)
# a section named `jobs` makes `jobs.x` read as a full ref: dlt's syntax cannot tell them apart
sections = identifiers.filter(lambda s: s != "jobs")
job_refs = st.lists(st.tuples(sections, identifiers), min_size=1, max_size=8, unique=True).map(
    lambda pairs: [f"jobs.{section}.{name}" for section, name in pairs]
)


def job(**overrides: Any) -> dict[str, Any]:
    job_def: dict[str, Any] = {
        "job_ref": "jobs.batch.load",
        "entry_point": {"module": "load", "function": "load", "job_type": "batch"},
        "triggers": ["schedule:0 6 * * *", "job.success:jobs.batch.extract"],
    }
    job_def.update(overrides)
    return job_def


# -- job refs -------------------------------------------------------------------------------------


@SETTINGS
@given(refs=job_refs, data=st.data())
def test_full_and_half_refs_resolve_to_the_full_ref(refs: list[str], data: st.DataObject) -> None:
    ref = data.draw(st.sampled_from(refs))
    assert resolve_ref(ref, refs) == ref
    assert resolve_ref(ref.removeprefix("jobs."), refs) == ref
    assert resolve_ref(f"  {ref}  ", refs) == ref


@SETTINGS
@given(refs=job_refs, data=st.data())
def test_bare_name_resolves_when_unique_and_lists_candidates_when_not(
    refs: list[str], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(refs)).rsplit(".", 1)[1]
    candidates = [r for r in refs if r.rsplit(".", 1)[1] == name]
    if len(candidates) == 1:
        assert resolve_ref(name, refs) == candidates[0]
        return
    with pytest.raises(JobRefError) as info:
        resolve_ref(name, refs)
    assert info.value.ref == name
    assert info.value.candidates == candidates
    assert "ambiguous" in info.value.reason
    assert all(c in info.value.reason for c in candidates)


@SETTINGS
@given(refs=job_refs, name=identifiers)
def test_unknown_job_name_is_refused_with_the_name(refs: list[str], name: str) -> None:
    unknown = f"nowhere.{name}"
    with pytest.raises(JobRefError) as info:
        resolve_ref(unknown, refs)
    assert info.value.ref == unknown
    assert unknown in info.value.reason
    assert info.value.candidates == []


def test_ambiguous_bare_name_names_every_candidate() -> None:
    refs = ["jobs.batch.load", "jobs.nightly.load", "jobs.batch.extract"]
    with pytest.raises(JobRefError) as info:
        resolve_ref("load", refs)
    assert info.value.candidates == ["jobs.batch.load", "jobs.nightly.load"]
    assert str(info.value) == (
        "job name 'load' is ambiguous; use one of: jobs.batch.load, jobs.nightly.load"
    )


@pytest.mark.parametrize("ref", ["", "   ", "a.b.c", "jobs.a.b.c", "jobs."])
def test_malformed_ref_is_refused(ref: str) -> None:
    with pytest.raises(JobRefError) as info:
        resolve_ref(ref, ["jobs.a.b"])
    assert info.value.ref == ref


# -- selectors ------------------------------------------------------------------------------------


def test_expanded_triggers_include_manual_tags_and_pipeline_name() -> None:
    job_def = job(expose={"tags": ["nightly"]}, deliver={"pipeline_name": "chess"})
    assert matched(job_def, ["jobs.batch.load"]) == [
        "schedule:0 6 * * *",
        "job.success:jobs.batch.extract",
        "tag:nightly",
        "manual:jobs.batch.load",
        "pipeline_name:chess",
    ]


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (["schedule"], ["schedule:0 6 * * *"]),
        (["schedule:*"], ["schedule:0 6 * * *"]),
        (["tag:"], ["tag:nightly"]),
        (["tag:nightly"], ["tag:nightly"]),
        (["tag:weekly"], []),
        (["manual:*"], ["manual:jobs.batch.load"]),
        (["job.success:jobs.batch.extract"], ["job.success:jobs.batch.extract"]),
        (["interactive"], []),
        (["jobs.batch.other"], []),
        (["jobs.batch.*"], None),
        (["batch"], None),
        (["job"], None),
    ],
)
def test_selector_matches_the_expanded_triggers(
    selectors: list[str], expected: list[str] | None
) -> None:
    job_def = job(expose={"tags": ["nightly"]})
    everything = matched(job_def, ["jobs.batch.load"])
    assert matched(job_def, selectors) == (everything if expected is None else expected)


def test_job_with_manual_disabled_is_not_matched_by_manual_selector() -> None:
    job_def = job(expose={"manual": False})
    assert matched(job_def, ["manual:*"]) == []
    assert select(job_def, ["manual:*"]) is None


def test_manual_run_of_a_scheduled_job_stays_manual() -> None:
    # the run is a person's or a key's: a paused schedule must not stop it
    assert select(job(), ["manual:jobs.batch.load"]) == "manual:jobs.batch.load"


def test_selecting_the_job_by_ref_or_everything_is_manual() -> None:
    job_def = job(triggers=["schedule:0 6 * * *", "every:1h"], default_trigger="every:1h")
    assert select(job_def, ["manual:*"]) == "manual:jobs.batch.load"
    assert select(job_def, ["jobs.batch.load"]) == "manual:jobs.batch.load"
    assert select(job_def, ["*"]) == "manual:jobs.batch.load"


def test_a_selector_of_a_timed_trigger_fires_that_trigger() -> None:
    job_def = job(triggers=["schedule:0 6 * * *", "every:1h"], default_trigger="every:1h")
    assert select(job_def, ["schedule"]) == "schedule:0 6 * * *"
    assert select(job_def, ["every:*"]) == "every:1h"
    # with manual disabled, naming the job fires its default trigger
    assert select({**job_def, "expose": {"manual": False}}, ["jobs.batch.load"]) == "every:1h"


def test_manual_run_of_an_event_only_job_stays_manual() -> None:
    job_def = job(triggers=["job.success:jobs.batch.extract"])
    assert select(job_def, ["manual:*"]) == "manual:jobs.batch.load"


def test_selector_that_matches_nothing_selects_nothing() -> None:
    assert select(job(), ["tag:nope"]) is None
    assert select(job(), []) is None


@SETTINGS
@given(
    selectors=st.lists(
        st.sampled_from(
            ["schedule", "tag:", "manual:*", "batch", "stream", "jobs.*", "job.success:*", "x"]
        ),
        max_size=4,
    )
)
def test_selected_trigger_is_manual_when_the_job_is_asked_for_else_a_match(
    selectors: list[str],
) -> None:
    job_def = job(expose={"tags": ["nightly"]})
    hits = matched(job_def, selectors)
    assert set(hits) <= set(matched(job_def, ["jobs.batch.load"]))
    picked = select(job_def, selectors)
    if not hits:
        assert picked is None
    elif "manual:jobs.batch.load" in hits:
        assert picked == "manual:jobs.batch.load"
    else:
        assert picked == hits[0]


# -- execute spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("execute", "expected"),
    [
        (None, (None, DEFAULT_GRACE_PERIOD_S)),
        ({}, (None, DEFAULT_GRACE_PERIOD_S)),
        ({"timeout": None}, (None, DEFAULT_GRACE_PERIOD_S)),
        ({"timeout": 60}, (60.0, DEFAULT_GRACE_PERIOD_S)),
        ({"timeout": 1.5}, (1.5, DEFAULT_GRACE_PERIOD_S)),
        ({"timeout": {"timeout": 600}}, (600.0, DEFAULT_GRACE_PERIOD_S)),
        ({"timeout": {"timeout": 600, "grace_period": 5}}, (600.0, 5.0)),
        ({"timeout": {"grace_period": 5}}, (None, 5.0)),
        ({"timeout": {"timeout": None, "grace_period": None}}, (None, DEFAULT_GRACE_PERIOD_S)),
    ],
)
def test_timeout_and_grace_period_are_read_from_execute(
    execute: dict[str, Any] | None, expected: tuple[float | None, float]
) -> None:
    job_def = job() if execute is None else job(execute=execute)
    assert timeout_of(job_def) == expected


@SETTINGS
@given(
    timeout=st.one_of(st.none(), st.integers(0, 10**6), st.floats(0, 1e6)),
    grace=st.one_of(st.none(), st.integers(0, 3600), st.floats(0, 3600)),
)
def test_timeout_spec_round_trips_as_floats(timeout: float | None, grace: float | None) -> None:
    got_timeout, got_grace = timeout_of(
        job(execute={"timeout": {"timeout": timeout, "grace_period": grace}})
    )
    assert got_timeout == (None if timeout is None else float(timeout))
    assert got_grace == (DEFAULT_GRACE_PERIOD_S if grace is None else float(grace))
    assert isinstance(got_grace, float)


def test_job_runs_one_at_a_time_unless_it_says_otherwise() -> None:
    assert concurrency_of(job()) == 1
    assert concurrency_of(job(execute={})) == 1
    assert concurrency_of(job(execute=None)) == 1


def test_explicit_none_concurrency_means_no_limit() -> None:
    assert concurrency_of(job(execute={"concurrency": None})) is None


@SETTINGS
@given(limit=st.integers(min_value=1, max_value=1000))
def test_declared_concurrency_is_kept(limit: int) -> None:
    assert concurrency_of(job(execute={"concurrency": limit})) == limit

"""`headwater.toml`: Headwater's own settings for a workspace, beside `__deployment__.py`.

dlt's manifest has no place for what only a runtime needs (overlap modes, debounce,
shared locks, external jobs such as dbt Cloud's, and later automations and retries), so
it lives here. The file is validated with pydantic at load and every error names its key
and line; the server keeps its last good configuration when a new one is bad, as it
does with a manifest. Secrets are references, never values: `env:NAME` (the server's
environment) or `secret:NAME` (a workspace variable set with `dlthub variable set
--secret`), resolved only where they are used.

Sections (each one a pydantic model below; an unknown key is an error, so a typo never
silently does nothing):
- `[jobs."<ref or selector>"]`: `JobSettings` of the jobs it selects. Keys are dlt job
  refs (full, `section.name` or bare), `tag:<tag>` or a glob; a key naming a job exactly
  wins over a selector.
- `[locks]`: how many runs may hold each named lock at once (undeclared locks: 1).
- `[dbt_cloud.connections.<name>]` and `[[dbt_cloud.jobs]]`: dbt Cloud jobs, which become
  jobs `jobs.dbt_cloud.<name>` like any other.
- `[[automations]]`: notifications, webhooks and actions on what happens to runs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from headwater.core.errors import HeadwaterError

CONFIG_FILE = "headwater.toml"
CONFIG_MODULE = "headwater.toml"
"""The `deployment_module` of jobs declared in this file (dbt Cloud jobs): a deploy of the
file archives the ones it no longer declares, and a manifest deploy leaves them alone."""
DBT_CLOUD_SECTION = "dbt_cloud"
DBT_CLOUD_JOB_TYPE = "dbt_cloud"


class ConfigError(HeadwaterError, ValueError):
    """`headwater.toml` cannot be used; `problems` lists each one with its key and line."""

    code = "invalid_config"
    status = 400

    def __init__(self, problems: list[str], path: str = CONFIG_FILE) -> None:
        self.problems = problems
        self.path = path
        super().__init__(f"{path}: " + "; ".join(problems))

    @property
    def detail(self) -> str:
        return str(self)


# -- value types -----------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """`"30s"`, `"10m"`, `"2h"`, `"1d"`, `"250ms"` or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '30m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(
            f"{value!r} is not a duration: write seconds (90) or a number with a unit:"
            " '250ms', '30s', '10m', '2h', '1d'"
        )
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written as a number or as `"30m"`."""

_SECRET_REF = re.compile(r"^(env|secret):([A-Za-z_][A-Za-z0-9_.\-]*)$")


def _check_secret_ref(value: Any) -> str:
    if not isinstance(value, str) or not _SECRET_REF.match(value):
        raise ValueError(
            "secrets are references, never values: write 'env:NAME' (an environment variable"
            " of the server) or 'secret:NAME' (a variable set with"
            " `dlthub variable set --secret NAME`)"
        )
    return value


SecretRef = Annotated[str, BeforeValidator(_check_secret_ref)]
"""`env:NAME` or `secret:NAME`; `resolve_secret` reads the value where it is used."""

SecretLookup = Callable[[str], str | None]
"""A workspace variable's value by name (None: not set)."""


class SecretNotFound(HeadwaterError, LookupError):
    code = "secret_not_found"

    def __init__(self, ref: str) -> None:
        kind, name = ref.split(":", 1)
        where = (
            "the server's environment"
            if kind == "env"
            else "the workspace variables (dlthub variable set --secret)"
        )
        super().__init__(f"{ref} is not set: {name} is missing from {where}")
        self.ref = ref


def resolve_secret(ref: str, env: Mapping[str, str], variables: SecretLookup) -> str:
    """The value an `env:`/`secret:` reference names; `SecretNotFound` when it is unset."""
    m = _SECRET_REF.match(ref)
    if m is None:
        raise ValueError(f"not a secret reference: {ref!r}")
    kind, name = m.groups()
    value = env.get(name) if kind == "env" else variables(name)
    if value is None or value == "":
        raise SecretNotFound(ref)
    return value


OverlapMode = Literal["skip", "replace", "ignore"]
"""What a trigger does while the job has an active run: `skip` it (the default; the run is
recorded as skipped when the job's concurrency is reached), `replace` (cancel the active
runs, then start), or `ignore` (start regardless of `execute.concurrency`)."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- sections --------------------------------------------------------------------------------


class JobSettings(Section):
    """Settings of the jobs a `[jobs."<ref or selector>"]` table selects."""

    overlap: OverlapMode | None = None
    """skip (default) | replace | ignore: see `OverlapMode`."""
    run_interval: Duration | None = None
    """Debounce: after a fire, at most one more per interval; triggers in between coalesce
    into one fire at its end (`debounced-trigger.md`, rules R1-R9). 0: every trigger fires,
    serialized. Unset: no debounce."""
    trigger_on_start: bool | None = None
    """With `run_interval`: fire once when the server starts (default true)."""
    locks: list[str] | None = None
    """Named locks a run must hold while it runs: runs sharing a lock never exceed its
    capacity (`[locks]`, default 1) and wait `pending`, naming the holder."""
    pool: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")] | None = None
    """With remote workers (`--executor celery`): the pool (Celery queue) whose workers
    run the job (default: dlt's `require.instance`, else `default`)."""
    triggers: list[str] | None = None
    """`job.success:<ref>` / `job.fail:<ref>` chains added to the job's own triggers: dlt's
    manifest cannot name a job only this file declares (it refuses unknown refs), so a
    dlt job follows a dbt Cloud job from here."""

    retries: Annotated[int, Field(ge=0, le=100)] | None = None
    """Attempts after the first when a run fails (default 0). A retry is a new attempt of
    the same run; chains and automations see only its final outcome."""
    retry_delay: Duration | None = None
    """Wait before the first retry (default 30 s)."""
    retry_backoff: Annotated[float, Field(ge=1.0, le=10.0)] | None = None
    """Each wait is this many times the one before (default 2.0: 30 s, 60 s, 120 s), with
    jitter of ±25 %."""
    retry_on: list[Literal["failed", "crashed", "timed_out"]] | None = None
    """Which outcomes are retried (default all three; a cancelled run never is)."""
    on_success: str | None = None
    """`module:function` of the workspace, called after a run completes (in a process of
    its own, with the run's data; its failure never changes the run's outcome)."""
    on_failure: str | None = None
    """`module:function` called after a run failed (or its runtime was lost)."""
    on_cancel: str | None = None
    """`module:function` called after a run was cancelled."""

    @field_validator("on_success", "on_failure", "on_cancel")
    @classmethod
    def _callable(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", v):
            raise ValueError(f"{v!r}: write module:function, such as hooks:notify_team")
        return v

    @field_validator("triggers")
    @classmethod
    def _chains_only(cls, v: list[str] | None) -> list[str] | None:
        for t in v or []:
            if t.split(":", 1)[0] not in ("job.success", "job.fail"):
                raise ValueError(
                    f"{t!r}: only job.success:<ref> and job.fail:<ref> can be added here;"
                    " declare other triggers in __deployment__.py"
                )
        return v

    def merged(self, over: JobSettings) -> JobSettings:
        """These settings with every field `over` sets replaced."""
        return self.model_copy(update=over.model_dump(exclude_unset=True))


_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class DbtCloudConnection(Section):
    """An account of dbt Cloud's Administrative API v2."""

    account_id: PositiveInt
    token: SecretRef
    """`env:NAME` or `secret:NAME` of an API or service token."""
    access_url: str = "https://cloud.getdbt.com"
    """The account's access URL; regional and single-tenant ones work (a path is kept)."""

    @field_validator("access_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("access_url must be an http(s) URL such as https://cloud.getdbt.com")
        return v.rstrip("/")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class DbtCloudJob(Section):
    """A dbt Cloud job Headwater triggers and watches: job `jobs.dbt_cloud.<name>`."""

    name: Annotated[str, Field(pattern=_NAME)]
    connection: str
    """A name under `[dbt_cloud.connections]`."""
    job_id: PositiveInt
    trigger: Annotated[list[str], BeforeValidator(_as_list)] = []
    """dlt trigger strings: `schedule:`, `every:`, `job.success:<ref>`, `tag:`..."""
    mode: OverlapMode = "skip"
    """Decided at fire time against dbt Cloud's own runs of the job (status 1, 2, 3)."""
    run_interval: Duration | None = None
    trigger_on_start: bool = True
    cause: str = "Triggered by Headwater: {trigger}"
    """The run's cause (at most 255 characters sent). Fields: {trigger}, {job_ref},
    {run_number}, {upstream_job_ref}, {upstream_run_number}."""
    poll_interval: Duration = 30.0
    timeout: Duration = 7 * 86400.0
    """The watch ends as failed with reason timeout after this long."""
    cancel_on_timeout: bool = False
    reuse_existing_run: bool = False
    """Attach to a run of the job that is not finished instead of starting one."""
    retry_from_failure: bool = False
    """Rerun from the point of failure when the job's last run failed."""
    wait_for_termination: bool = True
    """False: the run completes once dbt Cloud has accepted it (fire and forget)."""
    steps_override: list[str] | None = None
    schema_override: str | None = None
    git_branch: str | None = None
    git_sha: str | None = None
    tags: list[str] = []
    description: str | None = None

    @field_validator("poll_interval")
    @classmethod
    def _poll(cls, v: float) -> float:
        if v < 1:
            raise ValueError("poll_interval must be at least 1 second")
        return v

    @property
    def job_ref(self) -> str:
        return f"jobs.{DBT_CLOUD_SECTION}.{self.name}"


class DbtCloudSection(Section):
    connections: dict[str, DbtCloudConnection] = {}
    jobs: list[DbtCloudJob] = []

    @model_validator(mode="after")
    def _references(self) -> DbtCloudSection:
        seen: set[str] = set()
        for job in self.jobs:
            if job.connection not in self.connections:
                known = ", ".join(sorted(self.connections)) or "none declared"
                raise ValueError(
                    f"dbt Cloud job {job.name!r} names connection {job.connection!r}, which is"
                    f" not under [dbt_cloud.connections] ({known})"
                )
            if job.name in seen:
                raise ValueError(f"two dbt Cloud jobs are named {job.name!r}")
            seen.add(job.name)
        return self


AUTOMATION_EVENTS = (
    "job.success",
    "job.fail",
    "run.completed",
    "run.failed",
    "run.crashed",
    "run.cancelled",
    "run.timed_out",
    "run.skipped",
    "run.late",
    "run.long",
    "deadline.missed",
    "dbt_cloud.failed",
    "manifest.failed",
    "config.failed",
)
"""What an automation can be `on`: `<event>:<selector>` (selectors as dlt's: full, half or
bare refs, globs, `tag:<tag>`, `*`; `manifest.failed` and `config.failed` take none)."""


class Webhook(Section):
    """A JSON POST signed with HMAC-SHA256 (`X-Headwater-Signature: t=<unix>,v1=<hex>` over
    `<t>.<body>`), retried until the receiver takes it."""

    url: str
    secret: SecretRef | None = None
    headers: dict[str, str] = {}

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError("a webhook url is http:// or https://")
        return v


class Automation(Section):
    """`[[automations]]`: when something happens to runs, notify, call a webhook, act."""

    name: str
    on: Annotated[list[str], BeforeValidator(_as_list)]
    notify: Annotated[list[str], BeforeValidator(_as_list)] = []
    """apprise URLs (slack://, msteams://, mailto://, pagerduty://, json://, ntfy://, ...);
    a secret inside one is written `secret:NAME` or `env:NAME` (`mailto://me:secret:PASS@host`)."""
    title: str | None = None
    """Jinja2 template of the notification's title (default: the event and the job)."""
    message: str | None = None
    """Jinja2 template (sandboxed) of the text: `run`, `job`, `event`, `logs`, `url`."""
    webhook: Webhook | None = None
    actions: list[dict[str, str]] = []
    """`{pause = "<ref>"}`, `{resume = "<ref>"}`, `{trigger = "<ref>"}`, `{cancel = "run"}`."""
    count: PositiveInt = 1
    """Fire when this many runs of the job in a row ended so (`job.fail`: failures)."""
    after: Duration | None = None
    """For `run.late` (not started this long after it was due) and `run.long` (running
    longer than this)."""
    enabled: bool = True

    @field_validator("on")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        for item in v:
            event = item.split(":", 1)[0]
            if event not in AUTOMATION_EVENTS:
                raise ValueError(f"{item!r}: the event is one of {', '.join(AUTOMATION_EVENTS)}")
        return v

    @field_validator("actions")
    @classmethod
    def _actions(cls, v: list[dict[str, str]]) -> list[dict[str, str]]:
        for action in v:
            if len(action) != 1 or next(iter(action)) not in (
                "pause",
                "resume",
                "trigger",
                "cancel",
            ):
                raise ValueError(
                    f"{action!r}: an action is one of {{pause = ref}}, {{resume = ref}},"
                    ' {trigger = ref}, {cancel = "run"}'
                )
        return v

    @model_validator(mode="after")
    def _does_something(self) -> Automation:
        if not (self.notify or self.webhook or self.actions):
            raise ValueError(f"automation {self.name!r} has no notify, webhook or actions")
        timed = any(o.split(":", 1)[0] in ("run.late", "run.long") for o in self.on)
        if timed and self.after is None:
            raise ValueError(f"automation {self.name!r}: run.late and run.long need `after`")
        return self


class WorkspaceConfig(Section):
    """The whole of `headwater.toml`."""

    jobs: dict[str, JobSettings] = {}
    locks: dict[str, PositiveInt] = {}
    dbt_cloud: DbtCloudSection = DbtCloudSection()
    automations: list[Automation] = []

    @model_validator(mode="after")
    def _unique_automations(self) -> WorkspaceConfig:
        names = [a.name for a in self.automations]
        if len(names) != len(set(names)):
            raise ValueError("two automations share a name: each needs its own")
        return self

    def lock_capacity(self, name: str) -> int:
        return self.locks.get(name, 1)

    @property
    def hash(self) -> str:
        return hashlib.sha256(
            json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()[:16]


# -- loading ---------------------------------------------------------------------------------


def load_config(workspace: Path) -> WorkspaceConfig:
    """`headwater.toml` of `workspace` (an empty configuration when there is none)."""
    path = workspace / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return WorkspaceConfig()
    except (OSError, UnicodeDecodeError) as ex:
        raise ConfigError([f"cannot be read: {ex}"]) from ex
    return parse_config(text)


def parse_config(text: str, path: str = CONFIG_FILE) -> WorkspaceConfig:
    """Validate the text of a `headwater.toml`; `ConfigError` lists every problem with its
    key and line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as ex:
        raise ConfigError([f"not valid TOML: {ex}"], path) from ex
    try:
        return WorkspaceConfig.model_validate(data)
    except ValidationError as ex:
        lines = key_lines(text)
        problems = []
        for err in ex.errors(include_url=False):
            loc = tuple(err["loc"])
            key = dotted(loc)
            line = _line_of(lines, loc)
            where = f"{key} (line {line})" if line else key or "the file"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (a typo? see the README's headwater.toml section)"
            problems.append(f"{where}: {msg}")
        raise ConfigError(problems, path) from ex


def dotted(loc: Iterable[Any]) -> str:
    """`("jobs", "a.b", "overlap")` -> `jobs."a.b".overlap`; list positions as `[0]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not re.match(r"^[A-Za-z0-9_-]+$", text):
                text = json.dumps(text)
            out += ("." if out else "") + text
    return out


def key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Where each table and key of a TOML text starts: its path (array tables indexed) ->
    1-based line. Found with tomllib itself, one header or key line at a time."""
    found: dict[tuple[Any, ...], int] = {}
    table: tuple[Any, ...] = ()
    counts: dict[tuple[Any, ...], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            path = _header_path(line[1:-1].strip() if line.endswith("]]") else line)
            if path is None:
                continue
            index = counts.get(path, 0)
            counts[path] = index + 1
            table = (*path, index)
            found.setdefault(path, number)
            found[table] = number
        elif line.startswith("["):
            path = _header_path(line)
            if path is None:
                continue
            table = path
            found.setdefault(table, number)
        elif "=" in line:
            key = _key_path(line)
            if key is not None:
                found.setdefault((*table, *key), number)
    return found


def _header_path(header: str) -> tuple[Any, ...] | None:
    try:
        data = tomllib.loads(header.split("#", 1)[0].strip())
    except tomllib.TOMLDecodeError:
        return None
    return _first_path(data)


def _key_path(line: str) -> tuple[Any, ...] | None:
    key = line.split("=", 1)[0].strip()
    try:
        data = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        return None
    return _first_path(data)


def _first_path(data: Any) -> tuple[Any, ...]:
    path: list[Any] = []
    while isinstance(data, dict) and data:
        name, data = next(iter(data.items()))
        path.append(name)
    return tuple(path)


def _line_of(lines: Mapping[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest part of `loc` the text shows."""
    for end in range(len(loc), 0, -1):
        if (line := lines.get(loc[:end])) is not None:
            return line
    return None


# -- applying it to jobs ---------------------------------------------------------------------


def settings_for(
    config: WorkspaceConfig, jobs: Iterable[tuple[str, list[str]]]
) -> dict[str, dict[str, Any]]:
    """Each job's effective settings: job ref -> `JobSettings` fields it sets, with lock
    capacities (`{"locks": {"warehouse": 1}}`), as JSON for the job's row.

    `jobs` are (job ref, tags). Selectors apply first (in file order), a key naming the
    job itself last. A key that selects no job is an error: it is a typo or a job that is
    gone, and either way the user must hear of it.
    """
    jobs = list(jobs)
    refs = [ref for ref, _tags in jobs]
    matched: dict[str, list[tuple[int, JobSettings]]] = {ref: [] for ref in refs}
    problems: list[str] = []
    for key, settings in config.jobs.items():
        exact = _exact_ref(key, refs)
        if exact is not None:
            matched[exact].append((1, settings))
            continue
        hits = [ref for ref, tags in jobs if _selects(key, ref, tags)]
        if not hits:
            problems.append(
                f'jobs."{key}": selects no job of the manifest (refs such as'
                f" {', '.join(refs[:3]) or 'none'}; or tag:<tag>, or a glob)"
            )
        for ref in hits:
            matched[ref].append((0, settings))
    if problems:
        raise ConfigError(problems)
    out: dict[str, dict[str, Any]] = {}
    for ref, found in matched.items():
        merged = JobSettings()
        for _rank, settings in sorted(found, key=lambda f: f[0]):
            merged = merged.merged(settings)
        values = merged.model_dump(exclude_none=True)
        if "locks" in values:
            values["locks"] = {name: config.lock_capacity(name) for name in values["locks"]}
        out[ref] = values
    return out


def _exact_ref(key: str, refs: list[str]) -> str | None:
    """The ref `key` names, full, `section.name` or bare, when exactly one matches."""
    if key in refs:
        return key
    hits = [r for r in refs if r.endswith("." + key)]
    return hits[0] if len(hits) == 1 else None


def _selects(key: str, ref: str, tags: list[str]) -> bool:
    if key.startswith("tag:"):
        return any(fnmatch.fnmatchcase(t, key[4:]) for t in tags)
    return fnmatch.fnmatchcase(ref, key) or fnmatch.fnmatchcase(ref.rsplit(".", 1)[-1], key)

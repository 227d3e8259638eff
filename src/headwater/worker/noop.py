"""The job the warm launcher runs once at start, to load what dlt imports lazily."""

from dlt._workspace.deployment import job


@job
def noop() -> None:
    pass

"""Shared test setup: tests import `tests.*` helpers from the repository root."""

"""Headwater demo: two ingest jobs, and a report and a dbt transform chained after one.

Importing this module only declares jobs; the work lives in `pipelines.py`.
"""

import dlt.hub.run as run
import pipelines

__all__ = ["currencies", "products", "report", "transform"]


# `run.pipeline` is a batch job that also declares the pipeline it delivers
# (manifest `deliver.pipeline_name`), so `pipeline_name:demo_currencies` selects it
@run.pipeline(
    "demo_currencies",
    name="currencies",
    trigger=run.trigger.schedule("0 6 * * *"),  # daily 06:00 UTC
    expose={"tags": ["ingest"]},
)
def currencies() -> None:
    """Load currencies and daily EUR exchange rates from a (local) HTTP API."""
    pipelines.load_currencies()


@run.pipeline(
    "demo_products",
    name="products",
    trigger=run.trigger.schedule("0 7 * * 1"),  # Mondays 07:00 UTC
    expose={"tags": ["ingest"]},
)
def products() -> None:
    """Load the product catalogue from a SQL database."""
    pipelines.load_products()


@run.job(trigger=[currencies.success])
def report() -> None:
    """Rebuild the reporting tables after every successful currencies load."""
    pipelines.build_report()


@run.job(trigger=[currencies.success], expose={"tags": ["transform"]})
def transform() -> None:
    """dbt build of `transform/` (models and tests) after every successful currencies load."""
    pipelines.run_dbt()

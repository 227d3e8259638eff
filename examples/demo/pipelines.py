"""Job code for the demo workspace; `__deployment__.py` only declares the jobs.

Only dlt is imported at module level: heavy or optional imports (sqlalchemy,
duckdb, http.server) happen inside the functions so that reading the
manifest stays fast and never touches the network or the database.
"""

import contextlib
import csv
import functools
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
DATASET = "raw"


def duckdb_path() -> str:
    """One DuckDB file shared by all jobs, in dlt's local dir (`.dlt/data/<profile>/` of
    the workspace); `DEMO_DUCKDB_PATH` overrides it.

    Not next to this file: data follows the workspace, code may come from a deployed
    package (a path from `__file__` would point into the package).
    """
    return os.environ.get("DEMO_DUCKDB_PATH") or os.path.join(
        dlt.current.run_context().local_dir, "demo.duckdb"
    )


def _pipeline(name: str) -> dlt.Pipeline:
    # the same absolute path for dlt and for the plain DuckDB queries below
    return dlt.pipeline(
        pipeline_name=name,
        destination=dlt.destinations.duckdb(duckdb_path()),
        dataset_name=DATASET,
    )


def _count(sql: str) -> int:
    import duckdb

    with duckdb.connect(duckdb_path(), read_only=True) as con:
        return con.execute(sql).fetchone()[0]


# --- currencies: a small HTTP API served by the job itself -----------------


@contextlib.contextmanager
def serve_data() -> Iterator[str]:
    """Serve `data/` on an ephemeral loopback port; yields the base URL."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep the job log to dlt's own lines

    handler = functools.partial(QuietHandler, directory=str(DATA_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dlt.source(name="exchange_rates")
def exchange_rates_source(base_url: str) -> Any:
    from dlt.sources.helpers.requests import Client

    # trust_env=False: a loopback call must not go through HTTP(S)_PROXY
    http = Client(request_max_attempts=2, session_attrs={"trust_env": False}).session

    # replace/merge keep row counts stable when the job runs again
    @dlt.resource(write_disposition="replace", primary_key="code")
    def currencies() -> Iterator[Any]:
        yield http.get(f"{base_url}/currencies.json").json()

    # dlt keeps ISO dates as text unless told; a real date sorts and filters right
    @dlt.resource(
        write_disposition="merge",
        primary_key=("date", "base", "quote"),
        columns={"date": {"data_type": "date"}},
    )
    def rates() -> Iterator[Any]:
        yield http.get(f"{base_url}/rates.json").json()

    return currencies, rates


def load_currencies() -> None:
    pipeline = _pipeline("demo_currencies")
    with serve_data() as base_url:
        pipeline.run(exchange_rates_source(base_url))
    n_cur = _count(f"SELECT count(*) FROM {DATASET}.currencies")
    n_rates = _count(f"SELECT count(*) FROM {DATASET}.rates")
    print(f"loaded {n_cur} currencies and {n_rates} rates into {DATASET}")


# --- products: a CSV loaded through an in-memory SQLite database -----------


def _products_db() -> Any:
    """Build an in-memory SQLite database from `data/products.csv`.

    Mirrors ingesting from an operational database without writing a file.
    """
    import sqlalchemy as sa
    from sqlalchemy.pool import StaticPool

    # StaticPool: every connection shares the one in-memory database
    engine = sa.create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    meta = sa.MetaData()
    products = sa.Table(
        "products",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("category", sa.String, nullable=False),
        sa.Column("price", sa.Numeric(10, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
    )
    meta.create_all(engine)
    with open(DATA_DIR / "products.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with engine.begin() as con:
        con.execute(products.insert(), rows)
    return engine


def load_products() -> None:
    from dlt.sources.sql_database import sql_table

    engine = _products_db()
    table = sql_table(engine, table="products", write_disposition="replace")
    _pipeline("demo_products").run(table)
    engine.dispose()
    n = _count(f"SELECT count(*) FROM {DATASET}.products")
    print(f"loaded {n} products into {DATASET}")


# --- report: plain SQL over what the ingest jobs loaded --------------------

LATEST_RATES_SQL = f"""
CREATE OR REPLACE TABLE reporting.latest_rates AS
SELECT r.quote AS code, c.name, r.base, r.rate, r.date
FROM {DATASET}.rates r
JOIN {DATASET}.currencies c ON c.code = r.quote
WHERE r.date = (SELECT max(date) FROM {DATASET}.rates)
ORDER BY code
"""

# prices converted to the rates' base currency (EUR has no rate row: 1.0)
PRODUCTS_BY_CATEGORY_SQL = f"""
CREATE OR REPLACE TABLE reporting.products_by_category AS
SELECT p.category,
       count(*) AS products,
       round(avg(p.price / coalesce(l.rate, 1.0)), 2) AS avg_price_eur
FROM {DATASET}.products p
LEFT JOIN reporting.latest_rates l ON l.code = p.currency
GROUP BY p.category
ORDER BY p.category
"""


def build_report() -> None:
    import duckdb

    with duckdb.connect(duckdb_path()) as con:

        def has_table(name: str) -> bool:
            sql = "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?"
            return con.execute(sql, [DATASET, name]).fetchone()[0] > 0

        if not (has_table("rates") and has_table("currencies")):
            raise RuntimeError("no exchange rates loaded yet: run the `currencies` job first")
        con.execute("CREATE SCHEMA IF NOT EXISTS reporting")
        con.execute(LATEST_RATES_SQL)
        n_rates = con.execute("SELECT count(*) FROM reporting.latest_rates").fetchone()[0]
        line = f"built reporting.latest_rates ({n_rates} rows)"
        # products load weekly: report on them once they are there
        if has_table("products"):
            con.execute(PRODUCTS_BY_CATEGORY_SQL)
            n_cat = con.execute("SELECT count(*) FROM reporting.products_by_category").fetchone()[0]
            line += f" and reporting.products_by_category ({n_cat} rows)"
        else:
            line += "; no products loaded yet, skipped reporting.products_by_category"
    print(line)


# --- transform: a dbt-duckdb project over the loaded tables -----------------

DBT_PROJECT = HERE / "transform"


def run_dbt() -> None:
    """`dbt build` (models and their tests) of `transform/`, in this process.

    Headwater gives every run its own dbt target folder (DBT_TARGET_PATH) and keeps its
    run_results.json and manifest.json: `headwater run show` lists each model and test.
    """
    from dbt.cli.main import dbtRunner

    os.environ["DEMO_DUCKDB_PATH"] = duckdb_path()
    project = str(DBT_PROJECT)
    result = dbtRunner().invoke(
        ["build", "--project-dir", project, "--profiles-dir", project, "--no-use-colors"]
    )
    if not result.success:
        raise RuntimeError(f"dbt build failed: {result.exception or 'see the models and tests'}")

#!/usr/bin/env bash
# Installs Headwater into .venv, starts it on the demo workspace, and runs the demo end to end:
# two dlt pipelines load currencies, exchange rates and products into DuckDB; a report job and a
# dbt-duckdb transform (models and tests) chained on the currencies load build on them. The
# server stays up afterwards.
set -euo pipefail
cd "$(dirname "$0")"
echo "== 1/3 installing Headwater into .venv (what running needs; the tests install more)"
bash scripts/install --run
HW=.venv/bin/headwater
WS=examples/demo
PORT=${HEADWATER_PORT:-8765}
URL="http://127.0.0.1:$PORT"

echo "== 2/3 starting Headwater on $WS"
if ! curl -fs "$URL/health" >/dev/null 2>&1; then
  echo "starting: $HW up $WS --port $PORT  (log: $WS/.headwater/up.log)"
  mkdir -p "$WS/.headwater"
  nohup "$HW" up "$WS" --port "$PORT" >"$WS/.headwater/up.log" 2>&1 &
  for _ in $(seq 1 300); do
    curl -fs "$URL/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
export HEADWATER_URL="$URL"

echo "== 3/3 running the demo's jobs"
"$HW" job ls -w "$WS"
"$HW" job run products -w "$WS" --wait
"$HW" job run currencies -w "$WS" --wait
# `report` is chained on currencies' success: wait for it and show what landed in DuckDB
.venv/bin/python - "$WS" <<'PY'
import sys, time
from pathlib import Path
import duckdb
from headwater.cli.find import find_server
from headwater.client import Client

ws = Path(sys.argv[1])
client = Client(*find_server(ws))


def finished(name):
    job = next(j for j in client.jobs() if j["job_ref"].endswith("." + name))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        latest = client.job(job["id"])["latest_job_run"]
        if latest and latest["status"] in ("completed", "failed", "cancelled"):
            return latest
        time.sleep(0.2)
    raise SystemExit(f"{name} did not finish in time")


latest = finished("report")
print(f"report run #{latest['number']} ({latest['trigger']}): {latest['status']}")
for line in client.logs(latest["id"]):
    if line["source"] == "user":
        print("  |", line["content"])
transform = finished("transform")
print(f"transform run #{transform['number']} ({transform['trigger']}): {transform['status']}")
Path(ws / ".headwater" / "transform-run").write_text(transform["id"])
db = duckdb.connect(str(ws / ".dlt" / "data" / "dev" / "demo.duckdb"), read_only=True)
for table in ("raw.currencies", "raw.rates", "raw.products", "reporting.latest_rates", "reporting.products_by_category", "analytics.product_prices_eur"):
    print(f"  {table:<32} {db.execute(f'select count(*) from {table}').fetchone()[0]:>5} rows")
sys.exit(0 if latest["status"] == transform["status"] == "completed" else 1)
PY
# the dbt transform's models and tests, as Headwater kept them from its run_results.json
"$HW" run show "$(cat "$WS/.headwater/transform-run")" -w "$WS"
echo
WS_ID=$(python3 -c "import json;print(json.load(open('$WS/.headwater/server.json'))['workspace_id'])")
PID=$(python3 -c "import json;print(json.load(open('$WS/.headwater/server.json'))['pid'])")
echo "Headwater is still running at $URL (workspace $WS)."
echo "Look around from this folder (the CLI finds the server of $WS below it):"
echo "  source .venv/bin/activate      # puts headwater on PATH (or type .venv/bin/headwater)"
echo "  headwater job ls"
echo "  headwater run ls"
echo "  headwater run show <run id>    headwater run logs <run id>"
echo "  pages: $URL/w/$WS_ID  (sign in with a key from: headwater key create --name me --scope read)"
echo "Stop it with: kill $PID"

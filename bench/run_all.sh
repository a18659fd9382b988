#!/usr/bin/env bash
# The whole benchmark, one command: starts the reference server and Hearth (1 worker on SQLite;
# 2 workers on Redis and PostgreSQL) itself, runs every workload against each, prints ratios.
# Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (as ./scripts/test does),
# and a C compiler (cc, or $CC) for the generator's client, bench/wsload.c.
# Extra arguments go to `bench/run.py all` (--quick, --only hearth-1w, --workloads fanout,...).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"  # idle and storm hold thousands of sockets
exec uv run --frozen python bench/run.py all "$@"

#!/usr/bin/env bash
# The dashboard's ingest throughput over OTLP/HTTP protobuf, in a release build: a real
# dashboard (HTTP stack, ingest queue, writer, SQLite file) and SENDERS concurrent
# exporters posting BATCHES batches of 512 spans each (see
# services/dashboard/benches/ingest.rs). Prints spans/s accepted and written.
#
#   bench/dashboard.sh
#
# Environment: SENDERS (default 4), BATCHES per sender (default 100).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_INCREMENTAL=0
cargo bench -p flotilla-dashboard --bench ingest

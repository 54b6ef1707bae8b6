#!/usr/bin/env bash
# An MLflow 3 tracking server for distmeta on a cluster: runs, params and metrics in a
# database (PostgreSQL), artifacts (resolved configs, checkpoints, plots) in object storage,
# proxied by the server (--serve-artifacts), so training nodes need no bucket credentials
# for MLflow. Only the distmeta driver talks to it.
#
#   pip install "mlflow==3.17.2" psycopg2-binary boto3      # boto3: s3:// artifacts
#   MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:PASSWORD@db.internal.example:5432/mlflow \
#   MLFLOW_ARTIFACTS_DESTINATION=s3://my-bucket/mlflow-artifacts \
#   MLFLOW_HOST=0.0.0.0 \
#   MLFLOW_SERVER_ALLOWED_HOSTS='mlflow.internal.example:5000,localhost:*,127.0.0.1:*' \
#   cluster/mlflow-server.sh
#
# Then train with tracking.uri=http://mlflow.internal.example:5000 (or export
# MLFLOW_TRACKING_URI=...). Options, all from the environment:
#   MLFLOW_BACKEND_STORE_URI      required; SQLAlchemy URI, e.g. postgresql://user:pass@host:5432/db
#                                 (the schema is created on first start; after an MLflow
#                                 upgrade run `mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"`)
#   MLFLOW_ARTIFACTS_DESTINATION  required; s3://bucket/prefix, gs://..., or a shared path
#   MLFLOW_HOST                   interface to bind (default 127.0.0.1: this machine only;
#                                 0.0.0.0 for cluster nodes, inside a private network)
#   MLFLOW_PORT                   default 5000
#   MLFLOW_WORKERS                server worker processes (default 4)
#   MLFLOW_SERVER_ALLOWED_HOSTS   Host headers accepted, comma-separated, with the port
#                                 (default: localhost and private IPs only). Needed when
#                                 clients use a DNS name, e.g. mlflow.mlflow.svc.cluster.local:5000
# Extra arguments are passed to `mlflow server` (e.g. --cors-allowed-origins ...).
set -euo pipefail

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql://mlflow:PASSWORD@db.internal.example:5432/mlflow}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION, e.g. s3://my-bucket/mlflow-artifacts}"
HOST=${MLFLOW_HOST:-127.0.0.1}
PORT=${MLFLOW_PORT:-5000}
WORKERS=${MLFLOW_WORKERS:-4}

args=(
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI"
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"
    --serve-artifacts
    --host "$HOST"
    --port "$PORT"
    --workers "$WORKERS"
)
if [[ -n "${MLFLOW_SERVER_ALLOWED_HOSTS:-}" ]]; then
    args+=(--allowed-hosts "$MLFLOW_SERVER_ALLOWED_HOSTS")
fi

exec mlflow server "${args[@]}" "$@"

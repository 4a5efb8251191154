"""Stage 4, results: the run directory each experiment writes, and the dataset of a sweep.

    rundir    the run directory's contract: every file and column, atomic writes, statuses
    dataset   many run directories -> one set of Parquet tables with the parameters as columns
    nat       the dataset's nat_* columns of a run behind a NAT (run.json "nat")

The run directory's names are re-exported here (``results.RUN_JSON``, ``results.write_json``).
"""

from tcplimits.results.rundir import (
    CHURN_FILE, CHURN_SCHEMA, CLIENTS_FILE, CLIENTS_SCHEMA, COMPOSE_FILE, DESTINATIONS_FILE,
    DESTINATIONS_SCHEMA, LATER_FILES, LOGS_DIR, REALSERVER_FILE, REALSERVER_SCHEMA, RUN_JSON, SCHEMAS, SERIES_FILE, SERIES_SCHEMA,
    SERVER_FILE, SERVER_SCHEMA, STATUS_FAILED, STATUS_OK, STATUS_UNSUPPORTED, SUMMARY_FILE, frame,
    read_record, read_run, read_table, write_json, write_parquet, write_parquet_rows, write_text)

__all__ = [
    "CHURN_FILE", "CHURN_SCHEMA", "CLIENTS_FILE", "CLIENTS_SCHEMA", "COMPOSE_FILE",
    "DESTINATIONS_FILE", "DESTINATIONS_SCHEMA", "LATER_FILES", "LOGS_DIR", "REALSERVER_FILE",
    "REALSERVER_SCHEMA", "RUN_JSON", "SCHEMAS",
    "SERIES_FILE", "SERIES_SCHEMA", "SERVER_FILE", "SERVER_SCHEMA", "STATUS_FAILED", "STATUS_OK",
    "STATUS_UNSUPPORTED", "SUMMARY_FILE", "frame", "read_record", "read_run", "read_table",
    "write_json", "write_parquet", "write_parquet_rows", "write_text"]

"""reclaim's own state: the usage ledger, in an embedded SQLite database."""

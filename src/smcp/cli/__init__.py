"""The `smcp` command: a thin client of the management API (plus `smcp up`/`serve`)."""

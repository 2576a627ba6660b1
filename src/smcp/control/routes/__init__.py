"""Route modules of the management API, one concern each."""

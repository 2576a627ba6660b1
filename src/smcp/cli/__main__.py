"""`python -m smcp.cli`."""

from smcp.cli.main import app

app(prog_name="smcp")

"""Management REST API (OpenAPI), used by the CLI, the UI and edge sync."""

from smcp.control.app import create_control_app
from smcp.control.auth import authorize

__all__ = ["authorize", "create_control_app"]

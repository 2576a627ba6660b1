"""SMCP — Secure MCP: hosts Model Context Protocol servers for many tenants."""

__version__ = "0.1.0"

"""MCP on the wire: JSON-RPC envelopes with limits, eras and headers, SSE. Pure, no I/O."""

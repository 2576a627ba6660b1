"""The data plane: guard → authenticate → route → session → dispatch → stream."""

from smcp.gateway.streamable import Gateway

__all__ = ["Gateway"]

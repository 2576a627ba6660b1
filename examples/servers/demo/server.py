"""SMCP's demo server: a handful of tools, a resource and a prompt, over stdio.

Run it locally with `python server.py` (it speaks MCP on stdin/stdout), or deploy the
directory to SMCP, which runs it in a sandbox behind an authenticated URL.
"""

import os
import socket

import anyio
from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer(
    "demo",
    version="1.0.0",
    instructions="A demo server hosted by SMCP. Try `whoami` to see the sandbox it runs in.",
)


@mcp.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@mcp.tool()
def greet(name: str) -> str:
    """Greet someone, with the greeting configured in smcp.toml's [env]."""
    return f"{os.environ.get('GREETING', 'Hello')}, {name}!"


@mcp.tool()
async def countdown(n: int, ctx: Context) -> str:
    """Count down from n, reporting progress at each step."""
    for done in range(1, n + 1):
        await ctx.report_progress(done, n, f"T-minus {n - done}")
        await anyio.sleep(0.05)
    return "liftoff"


@mcp.tool()
def whoami() -> dict[str, object]:
    """Describe the process serving this call: under SMCP, the sandbox it runs in."""
    return {"uid": os.getuid(), "pid": os.getpid(), "hostname": socket.gethostname(), "cwd": os.getcwd()}


@mcp.resource("demo://readme", mime_type="text/markdown")
def readme() -> str:
    """What this server is."""
    return "# demo\n\nA small MCP server hosted by SMCP. Tools: echo, add, greet, countdown, whoami.\n"


@mcp.prompt()
def introduce(name: str) -> str:
    """Ask the model to introduce someone using the demo tools."""
    return f"Use the greet tool to welcome {name}, then call whoami and explain where this server runs."


if __name__ == "__main__":
    mcp.run()

"""The MCP server the MCP tests start (over stdio, or HTTP with a port argument)."""

#: A real MCP server (the mcp package's own MCPServer); each call is written to $CALLS.
SERVER = '''
import os, sys
from mcp.server.mcpserver import MCPServer
app = MCPServer("demo")

def _log(line):
    with open(os.environ["CALLS"], "a") as f:
        f.write(line + "\\n")

@app.tool()
def add(a: int, b: int) -> int:
    """Add two numbers"""
    _log(f"add {a} {b}")
    return a + b

@app.tool()
def get_weather(city: str) -> str:
    """Current weather in a city"""
    _log(f"get_weather {city}")
    return f"{city}: 14 degrees Celsius, light rain"

if len(sys.argv) > 1:
    app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
else:
    app.run()
'''

"""localmcp: small MCP servers for one local GPU box."""

__version__ = "0.1.0"

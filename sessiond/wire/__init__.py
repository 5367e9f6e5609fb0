"""The wire: framing and limits (server), JSON-RPC glue, the method table, handlers.

Handlers turn params into calls on the daemon's `App`; nothing below imports this.
"""

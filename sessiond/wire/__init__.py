"""The wire: the socket server and its connections, the dispatch, the method table, handlers.

server.py accepts (peers.py says who called), connection.py frames and
bounds each client (limits.py), dispatch.py answers a line through the table
of methods.py (jsonrpc.py: what is a request; lean.py: jsonrpcserver's
import), whose handlers turn params into one call of the daemon's `App`
(context.py: what a handler is handed). Nothing in sessiond.core or
sessiond.daemon imports from here, and nothing here imports sessiond.main:
main.py hands the server everything it acts on.
"""

"""sessionc, stdlib only: it shares nothing with the daemon but core/settings, core/units
and errors (a test keeps it so, and keeps psutil, pyroute2 and jsonrpcserver out)."""

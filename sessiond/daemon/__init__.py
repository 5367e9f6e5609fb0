"""The shell: the daemon's use cases, sessions, fleet, supervisor, store, logs, network.

Nothing here imports from `sessiond.wire` or `sessiond.main`: the layers are
core ← daemon ← wire ← main (docs/architecture.md).
"""

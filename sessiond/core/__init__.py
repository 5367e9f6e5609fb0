"""The pure core: the rules of sessions and agents as data and functions of time.

No asyncio, sqlite3, subprocess or socket here, and no process calls: the
daemon's shell feeds events in and carries effects out (tests/test_core.py
imports each module in a fresh interpreter and checks what it loaded).
"""

"""sessiond: one active-session lock per machine, with supervised agents."""

__version__ = "0.1.0"

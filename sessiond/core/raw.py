"""JSON made once and sent many times: a part of a reply that is already encoded."""

from __future__ import annotations


class Raw:
    """A JSON value as its encoded text (compact, ASCII only), which the reply's encoder
    (wire/jsonrpc.dumps) puts in as it is: 200 agents that did not change since the last
    status are not encoded again."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}…)"

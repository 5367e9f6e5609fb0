"""What an agent may report: metric names and values, their totals, checkpoint sizes.

Agents are hostile input (SPEC §4): every rule that a report must pass is
here, as a pure function that returns the checked value or raises
InvalidParams with the rule and an example.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from sessiond.errors import InvalidParams

METRIC_RE = re.compile(r"[a-z_][a-z0-9_]{0,31}")
CHECKPOINT_MAX_BYTES = 64 * 1024


def check_metrics(metrics: Mapping[str, Any]) -> Mapping[str, float]:
    """Counters only: a name like `tokens`, a finite number >= 0 (not a boolean)."""
    for key, value in metrics.items():
        if (
            not METRIC_RE.fullmatch(key)
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise InvalidParams(
                f"metric {key!r} = {value!r}: want a name like tokens and a finite number"
                " >= 0 (counters only grow)",
                'for example {"tokens": 1500, "cost": 0.025}',
            )
    return metrics


def added(totals: Mapping[str, float], metrics: Mapping[str, float]) -> dict[str, float]:
    """`totals` with `metrics` added; a sum that is no longer finite is refused."""
    result = dict(totals)
    for key, value in metrics.items():
        result[key] = result.get(key, 0) + value
        if not math.isfinite(result[key]):
            raise InvalidParams(
                f"metric {key!r}: {totals.get(key, 0)!r} + {value!r} is not a finite number",
                "report smaller amounts, or start a new session",
            )
    return result


def encoded_checkpoint(data: Any) -> str:
    """The checkpoint as stored: JSON text of at most 64 KiB."""
    encoded = json.dumps(data)
    size = len(encoded.encode())
    if size > CHECKPOINT_MAX_BYTES:
        raise InvalidParams(
            f"checkpoint of {size} bytes is over 64 KiB",
            "store a reference (a path) to large state instead",
        )
    return encoded

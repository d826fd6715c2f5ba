"""Value types for settings read from the environment, shared by every settings class.

The iteration's settings (runner/settings.py) and the supervisor's
(runner/supervise_settings.py) parse numbers the same way, so a value one accepts the
other accepts too: a plain decimal number (``5``, ``0.5``), no units, no exponent, never
``nan`` or ``inf`` — an operator who writes ``5m`` is told what was expected.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_DECIMAL = re.compile(r"[0-9]{1,12}(\.[0-9]+)?")


def _decimal(what: str, positive: bool = False):
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected {what}")
        if isinstance(value, (int, float)):
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")) or number < 0:
                raise ValueError(f"expected {what}")
        else:
            text = str(value).strip()
            if not _DECIMAL.fullmatch(text):
                raise ValueError(f"expected {what}")
            number = float(text)
        if positive and number <= 0:
            raise ValueError(f"expected {what}")
        return number

    return BeforeValidator(parse)


SECONDS = "a number of seconds, 0 or more, like 5 or 0.5"
POSITIVE_SECONDS = "a number of seconds greater than 0, like 5 or 0.5"
HOURS = "a number of hours, 0 or more, like 24 or 0.5"
DAYS = "a number of days, 0 or more, like 14 or 0.5"

Seconds = Annotated[float, _decimal(SECONDS)]
PositiveSeconds = Annotated[float, _decimal(POSITIVE_SECONDS, positive=True)]
Hours = Annotated[float, _decimal(HOURS)]
Days = Annotated[float, _decimal(DAYS)]


def _count(value: Any) -> Any:
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,9}", text) or int(text) < 1:
        raise ValueError("expected a whole number of at least 1")
    return int(text)


Count = Annotated[int, BeforeValidator(_count)]

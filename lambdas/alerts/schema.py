"""The pydantic validation of one alert object (`Alert`, `AlertHeader`).

Kept apart from alerts.model so that importing the contract does not load pydantic (~60 ms of
cold start): the alerts API never validates an alert, and the processor loads this module on
the first object it reads. Import these names from alerts.model, which forwards to here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints, field_validator

from alerts.model import MAX_CODE, MAX_FIELDS, decode_base64

FieldId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,6}$")]


class AlertHeader(BaseModel):
    """What the classifier may see of an alert (and all the index keeps of it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fw: Annotated[StrictStr, Field(min_length=1, max_length=32)]
    code: Annotated[StrictInt, Field(ge=0, le=MAX_CODE)]
    fields: Annotated[dict[FieldId, float], Field(max_length=MAX_FIELDS)]

    @field_validator("fields", mode="before")
    @classmethod
    def _finite_numbers(cls, value: Any) -> Any:
        """Values must be real JSON numbers: no bool, no numeric strings, no NaN/Infinity."""
        if isinstance(value, Mapping):
            for number in value.values():
                if isinstance(number, bool) or not isinstance(number, (int, float)):
                    # ValueError, not TypeError: pydantic turns only ValueErrors into ValidationErrors.
                    raise ValueError("field values must be numbers")  # noqa: TRY004
                try:
                    finite = math.isfinite(number)
                except OverflowError:  # an int too large for a float
                    finite = False
                if not finite:
                    raise ValueError("field values must be finite")
        return value


class Alert(BaseModel):
    """One alert object as a device publishes it. Extra keys are refused, here and in the header."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: AlertHeader
    trace: StrictStr

    @field_validator("trace")
    @classmethod
    def _strict_base64(cls, value: str) -> str:
        decode_base64(value)
        return value

    def trace_bytes(self) -> bytes:
        return decode_base64(self.trace)

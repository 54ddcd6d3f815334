"""Scheduling options are validated before anything is sent, naming the bad option."""

from __future__ import annotations

import math

import pytest

import flame
from flame._scheduling import Scheduling


def test_defaults_and_the_slots_alias() -> None:
    assert Scheduling.of() == Scheduling(0, 0, 1.0, 0, "")
    assert Scheduling.of(slots=3).max_executors == 3
    assert Scheduling.of(max_executors=3, slots=3).max_executors == 3
    s = Scheduling.of(max_executors=4, min_executors=4, weight=2, priority=-3, user="ana")
    assert s.session_kwargs() == {
        "slots": 4,
        "min_executors": 4,
        "weight": 2.0,
        "priority": -3,
        "user": "ana",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_executors": 5, "max_executors": 4}, "min_executors (5) is more than"),
        ({"min_executors": 2, "slots": 1}, "min_executors (2) is more than"),
        ({"weight": 0}, "weight must be a finite number > 0"),
        ({"weight": -1.0}, "weight must be"),
        ({"weight": math.inf}, "weight must be"),
        ({"weight": "2"}, "weight must be"),
        ({"max_executors": True}, "max_executors must be an int"),
        ({"max_executors": 2**40}, "max_executors must be below"),
        ({"slots": 1, "max_executors": 2}, "another name"),
        ({"priority": 2**31}, "priority must fit"),
        ({"user": 7}, "user must be a str"),
    ],
)
def test_bad_options_raise_value_errors_naming_them(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as err:
        Scheduling.of(**options)  # type: ignore[arg-type]
    assert message in str(err.value)
    assert isinstance(err.value, flame.InvalidArgumentError)

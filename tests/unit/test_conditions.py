"""Condition helpers: set/merge keyed by type, transition times kept, stable order."""

from __future__ import annotations

import pytest

from llamaft_operator import conditions as c

pytestmark = pytest.mark.unit


def test_set_adds_and_replaces_by_type() -> None:
    conds = c.set_condition([], c.TRAINED, c.UNKNOWN, c.RUNNING, "m", generation=1, now="t1")
    conds = c.set_condition(conds, c.PLANNED, c.TRUE, c.INITIAL_PLAN, "p", generation=1, now="t1")
    assert [x["type"] for x in conds] == [c.PLANNED, c.TRAINED]
    conds = c.set_condition(
        conds, c.TRAINED, c.TRUE, c.TRAINING_SUCCEEDED, "ok", generation=2, now="t2"
    )
    trained = c.find(conds, c.TRAINED)
    assert trained == {
        "type": c.TRAINED,
        "status": c.TRUE,
        "reason": c.TRAINING_SUCCEEDED,
        "message": "ok",
        "lastTransitionTime": "t2",
        "observedGeneration": 2,
    }
    assert c.is_true(conds, c.TRAINED)
    assert not c.is_true(conds, c.PUBLISHED)


@pytest.mark.parametrize(
    ("old_status", "new_status", "expected_time"),
    [(c.TRUE, c.TRUE, "t1"), (c.UNKNOWN, c.TRUE, "t2"), (c.TRUE, c.FALSE, "t2")],
)
def test_transition_time_changes_only_with_status(
    old_status: str, new_status: str, expected_time: str
) -> None:
    conds = c.set_condition([], c.TRAINED, old_status, "A", "", generation=1, now="t1")
    conds = c.set_condition(conds, c.TRAINED, new_status, "B", "", generation=1, now="t2")
    assert conds[0]["lastTransitionTime"] == expected_time


def test_reasons_are_camel_case() -> None:
    import re

    reasons = [v for k, v in vars(c).items() if k.isupper() and isinstance(v, str)]
    for reason in reasons:
        assert re.fullmatch(r"[A-Z][A-Za-z]*", reason), reason


def test_remove_and_messages_are_bounded() -> None:
    conds = c.set_condition([], c.NOTIFIED, c.TRUE, "A", "x" * 5000, generation=None, now="t")
    assert len(conds[0]["message"]) == 4096
    assert "observedGeneration" not in conds[0]
    assert c.remove(conds, c.NOTIFIED) == []

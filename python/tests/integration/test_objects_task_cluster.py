"""A task's process knows its cluster's id (#12): a ref of another cluster that a task
unpickles by hand is refused naming it, as it is in the client (InvalidArgumentError)."""

from __future__ import annotations

import pickle

import pytest

import flame
from flame import api, errors, objects


class _ForeignRef:
    """Pickles as a ref of another cluster (a client of this one refuses to pickle one)."""

    def __init__(self, object_id: int) -> None:
        self.object_id = object_id

    def __reduce__(self) -> tuple:
        return (objects._rebuild_in, ("another-state-id", self.object_id, 64))


@flame.service
def unpickle(blob: bytes) -> str:
    return repr(pickle.loads(blob))


def test_a_foreign_ref_unpickled_inside_a_task_is_refused_naming_it() -> None:
    here = api.runtime().conn.objects.cluster
    assert here, "the client knows its cluster"
    mine = flame.put(b"x")
    blob = pickle.dumps(_ForeignRef(mine.id))
    named = f"object {mine.id:#x} belongs to another cluster \\(state another-state-id\\)"
    with pytest.raises(errors.InvalidArgumentError, match=named):
        pickle.loads(blob)
    with pytest.raises(errors.InvalidArgumentError, match=f"{named}.*state {here}"):
        unpickle(blob).result(timeout=60)

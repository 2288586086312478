"""The user directory (rater/core/state.py ``UserDirectory``): changes win over the store,
reads are cached and the cache stays small; without a reader every user stays in memory."""

from __future__ import annotations

import pytest

from rater.core.state import User, UserDirectory

ALICE = User("US", ("PAYG",))


def test_changes_win_reads_are_cached_and_a_drain_hands_over_only_the_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = {"alice": ALICE}
    reads: list[str] = []

    def reader(user_id: str) -> User | None:
        reads.append(user_id)
        return stored.get(user_id)

    users = UserDirectory(reader)
    assert (users.get("alice"), users.get("alice"), users.get("bob"), users.get("bob")) == (ALICE, ALICE, None, None)
    assert reads == ["alice", "bob"]  # a miss is remembered too
    bob = User("GB", ("MCOPSTN1",))
    users.put("bob", bob)
    assert users.get("bob") == bob
    assert users.drain() == {"bob": bob}
    assert (users.drain(), users.get("bob"), reads) == ({}, bob, ["alice", "bob"])
    assert users.everyone() is None  # the store holds users the directory never saw

    monkeypatch.setattr("rater.core.state.USER_CACHE", 3)
    for n in range(10):
        users.get(f"stranger-{n}")
        assert len(users.held) <= 3


def test_without_a_reader_every_user_stays_in_memory() -> None:
    users = UserDirectory()
    users.put("alice", ALICE)
    assert users.drain() == {"alice": ALICE}
    assert (users.get("alice"), users.everyone()) == (ALICE, {"alice": ALICE})
    assert UserDirectory(complete=False).everyone() is None  # a stored tenant read without its users

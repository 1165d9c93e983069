"""A visitor's learned state across reloads and restarts (smem.ui.visitor_state): the browser
keeps a ring of ids, the pools live in a SQLite session store."""

from __future__ import annotations

import stat
import time

import pytest

from smem.memory.memory_sets import MemorySets
from smem.serving.session_store import SQLiteSessionStore
from smem.ui.visitor_state import KeyRing, VisitorStates, browser_secret


@pytest.fixture
def sets(minilm) -> MemorySets:
    return MemorySets(minilm)


def states(sets: MemorySets, tmp_path, ttl_s: float = 3600.0) -> VisitorStates:
    return VisitorStates(SQLiteSessionStore(tmp_path / "visitors.sqlite3", ttl_s=ttl_s), sets, sets.embedder)


def taught(sets: MemorySets, name: str):
    """A pool of `name` that learned something: two retrievals link what they found together."""
    pool = sets.pool(name)
    for question in sets.examples(name)[:2]:
        pool.retrieve(question)
    assert pool.links(), "the retrievals should have linked memories"
    return pool


@pytest.mark.parametrize("ring", [None, "x", [1, 2], {}, {"sessions": 5}, {"current": 3, "sessions": {"a": 1}}])
def test_a_first_visit_or_a_ring_that_is_no_ring_restores_nothing(sets, tmp_path, ring):
    assert states(sets, tmp_path).restore(ring) is None


def test_what_a_visitor_taught_comes_back_byte_for_byte(sets, tmp_path):
    visitors = states(sets, tmp_path)
    pool = taught(sets, sets.default)
    ring = visitors.save({}, sets.default, pool, answered=True)
    restored = states(sets, tmp_path).restore(ring)  # a new process on the same file: a restart
    assert restored is not None and restored.label == sets.default
    assert restored.pool.to_bytes() == pool.to_bytes()
    assert restored.stash == {} and "restored" in restored.note


def test_every_set_comes_back_and_the_open_one_stays_open(sets, tmp_path):
    first, second = sets.names[:2]
    visitors = states(sets, tmp_path)
    tutor = taught(sets, first)
    ring = visitors.save({}, first, tutor, answered=True)
    ring = visitors.opened(ring, second)
    other = sets.pool(second)
    other.add("I keep my running shoes by the door.")
    ring = visitors.save(ring, second, other)
    restored = visitors.restore(ring)
    assert restored.label == second and len(restored.pool) == len(other)
    assert restored.stash[first][0].to_bytes() == tutor.to_bytes()
    assert set(restored.ring.sessions) == {first, second}


def test_saving_again_updates_the_same_row(sets, tmp_path):
    visitors = states(sets, tmp_path)
    pool = sets.pool(sets.default)
    ring = visitors.save({}, sets.default, pool)
    pool.add("A note added later.")
    again = visitors.save(ring, sets.default, pool, answered=True)
    assert again == ring and len(visitors.store) == 1
    assert len(visitors.restore(again).pool) == len(pool)


def test_an_expired_row_is_said_and_the_set_starts_afresh(sets, tmp_path):
    visitors = states(sets, tmp_path, ttl_s=1e-9)  # every row has expired by the next read
    ring = visitors.save({}, sets.default, taught(sets, sets.default))
    restored = visitors.restore(ring)
    assert "expired" in restored.note and restored.ring.sessions == {}
    assert restored.pool.to_bytes() == sets.pool(sets.default).to_bytes()
    fresh = visitors.save(restored.ring.as_json(), sets.default, restored.pool)
    assert fresh["sessions"][sets.default] != ring["sessions"][sets.default], "an expired id is not reused"


def test_an_unreadable_row_is_dropped_not_a_crash(sets, tmp_path):
    visitors = states(sets, tmp_path)
    ring = visitors.save({}, sets.default, sets.pool(sets.default))
    assert visitors.store.replace(ring["sessions"][sets.default], sets.default, b"not a pool file", time.time())
    restored = visitors.restore(ring)
    assert "unreadable" in restored.note and restored.ring.sessions == {}


def test_a_ring_keeps_only_string_ids():
    ring = KeyRing.parse({"current": "tutor", "sessions": {"tutor": "abc", "family": 7, 3: "x"}})
    assert ring == KeyRing("tutor", {"tutor": "abc"})


def test_the_browser_secret_is_made_once_and_private(tmp_path):
    secret = browser_secret(tmp_path / "state")
    assert len(secret) >= 43 and browser_secret(tmp_path / "state") == secret
    mode = (tmp_path / "state" / "browser-state.key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600

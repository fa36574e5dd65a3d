"""The peer watchdog over an in-memory key-value store (the coordination service's API)."""

from __future__ import annotations

import threading
import time

from swejax.watchdog import PeerWatchdog

BEAT_S, STALE_S = 0.05, 1.0  # a beat thread is never 1 s late, even on a loaded machine


class Store:
    """key_value_set / key_value_dir_get as the JAX distributed client has them."""

    def __init__(self):
        self.values: dict[str, str] = {}
        self.broken = False
        self.lock = threading.Lock()

    def key_value_set(self, key, value, allow_overwrite=False):
        if self.broken:
            raise RuntimeError("UNAVAILABLE: failed to connect")
        with self.lock:
            self.values[key] = value

    def key_value_dir_get(self, prefix):
        if self.broken:
            raise RuntimeError("UNAVAILABLE: failed to connect")
        with self.lock:
            return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


def _pair(store: Store, processes: int = 2):
    lost: dict[int, list[str]] = {p: [] for p in range(processes)}
    dogs = [
        PeerWatchdog(store, p, processes, BEAT_S, STALE_S, on_lost=lost[p].append).start()
        for p in range(processes)
    ]
    return dogs, lost


def _wait_for(condition, seconds: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, "timed out"
        time.sleep(0.01)
    return time.monotonic() - start


def test_live_peers_are_never_reported_and_a_finished_one_is_not_missed():
    store = Store()
    dogs, lost = _pair(store, 3)
    time.sleep(3 * STALE_S)
    dogs[2].finish(ok=True)  # ends normally and stops beating
    time.sleep(3 * STALE_S)
    assert lost == {0: [], 1: [], 2: []}
    for dog in dogs[:2]:
        dog.finish(ok=True)


def test_a_peer_whose_beat_stops_is_named_within_the_limit():
    store = Store()
    dogs, lost = _pair(store, 3)
    time.sleep(2 * BEAT_S)
    dogs[1]._stopped.set()  # process 1 dies: its beat stops, it says nothing
    seconds = _wait_for(lambda: lost[0] and lost[2], STALE_S + 10 * BEAT_S + 1)
    assert seconds + 2 * BEAT_S >= STALE_S
    for survivor in (0, 2):
        (message,) = lost[survivor]
        assert message.startswith("process 1 stopped answering: no heartbeat for 1 s")
        assert f"Process {survivor} stops too" in message
    assert lost[1] == []


def test_a_lost_store_names_process_0():
    store = Store()
    dogs, lost = _pair(store)
    time.sleep(2 * BEAT_S)
    store.broken = True  # process 0, which serves the store, is gone
    _wait_for(lambda: lost[1], 1)
    assert lost[1][0].startswith("process 1 lost the coordination service on process 0")


def test_a_process_that_fails_after_its_peer_was_lost_names_the_peer():
    """Process 0's collective fails because process 1 died a moment ago: process 0's exit
    waits for its watchdog to name process 1, and stops beating meanwhile."""
    store = Store()
    dogs, lost = _pair(store)
    time.sleep(2 * BEAT_S)
    dogs[1]._stopped.set()
    dogs[0].finish(ok=False)
    assert len(lost[0]) == 1 and lost[0][0].startswith("process 1 stopped answering")


def test_a_process_that_fails_on_its_own_stops_its_peer_at_once_naming_it():
    store = Store()
    dogs, lost = _pair(store)
    time.sleep(2 * BEAT_S)
    started = time.monotonic()
    dogs[1].finish(ok=False)  # its own error; its peer stops, so it need not wait long
    assert time.monotonic() - started < STALE_S
    assert lost[0] == [
        "process 1 failed (its log says why). Process 0 stops too; the same command resumes "
        "the run from its last checkpoint"
    ]
    assert lost[1] == []


def test_processes_that_fail_together_name_no_one():
    """Both stop on the same error (a config mismatch): each exits with its own message."""
    store = Store()
    dogs, lost = _pair(store)
    time.sleep(2 * BEAT_S)
    failing = [threading.Thread(target=d.finish, kwargs={"ok": False}) for d in dogs]
    started = time.monotonic()
    for thread in failing:
        thread.start()
    for thread in failing:
        thread.join()
    assert time.monotonic() - started < STALE_S
    assert lost == {0: [], 1: []}


def test_a_process_done_first_waits_for_its_peers_to_end_before_it_exits():
    """Process 0 may still be writing the report when process 1 is done: process 1 returns
    from finish only once process 0 has ended, so JAX's short shutdown barrier sees both."""
    store = Store()
    dogs, lost = _pair(store)
    waiter = threading.Thread(target=dogs[1].finish, kwargs={"ok": True, "wait_for_peers": True})
    waiter.start()
    time.sleep(3 * STALE_S)  # still beating: process 0 does not miss it
    assert waiter.is_alive() and lost == {0: [], 1: []}
    dogs[0].finish(ok=True)
    waiter.join(timeout=2 * STALE_S)
    assert not waiter.is_alive() and lost == {0: [], 1: []}


def test_a_process_waiting_for_its_peers_names_one_that_is_lost():
    store = Store()
    dogs, lost = _pair(store)
    waiter = threading.Thread(target=dogs[1].finish, kwargs={"ok": True, "wait_for_peers": True})
    waiter.start()
    dogs[0]._stopped.set()  # process 0 is killed: its beat stops, it never says it ended
    _wait_for(lambda: not waiter.is_alive(), 3 * STALE_S)
    assert lost[1] and "process 0 stopped answering" in lost[1][0]

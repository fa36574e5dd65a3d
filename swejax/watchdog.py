"""A dead peer, named: every process of a run beats in the coordination service's key-value
store, and a process whose peer's beat stops stops too, with one line naming that peer.

Without it a lost process is found only by JAX's own heartbeat, which aborts the others from
C++ with a stack trace. The watchdog's limit (`stale_s`) is shorter than JAX's, so the line
comes first; it exits with `os._exit`, since the main thread may be blocked inside a collective
that will never finish.

A process that ends says how (`finish`): normally, and it is not missed; or failed, and its
peers stop within two beats, naming it. A failing process watches a little longer before it
exits: if a peer was lost before it (its collective failed because that peer died), its line
names that peer rather than the symptom.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

EXIT_PEER_LOST = 3  # the exit status of a process stopped because a peer was lost
_ROOT = "swejax/watchdog/"  # the store's keys: ROOT + beat/P, done/P, failed/P (full keys)
_BEAT, _DONE, _FAILED = f"{_ROOT}beat/", f"{_ROOT}done/", f"{_ROOT}failed/"


def stop_process(message: str) -> None:
    """Print `message` and end this process at once (no atexit: JAX's shutdown would wait)."""
    print(f"swejax: error: {message}", file=sys.stderr, flush=True)
    logging.shutdown()  # the process log gets the line too
    os._exit(EXIT_PEER_LOST)


class PeerWatchdog:
    """Beats every `beat_s` and checks the peers' beats; calls `on_lost(message)` for the
    first peer whose beat has not changed for `stale_s` (or when the store itself is gone)."""

    def __init__(
        self,
        client,
        process_id: int,
        num_processes: int,
        beat_s: float,
        stale_s: float,
        on_lost: Callable[[str], None] = stop_process,
    ):
        self._client, self._me, self._count = client, process_id, num_processes
        self._beat_s, self._stale_s, self._on_lost = beat_s, stale_s, on_lost
        self._stopped, self._beating = threading.Event(), threading.Event()
        self._beating.set()
        self._thread = threading.Thread(target=self._watch, name="swejax-watchdog", daemon=True)

    def start(self) -> PeerWatchdog:
        self._thread.start()
        return self

    def finish(self, ok: bool, wait_for_peers: bool = False) -> None:
        """Stop beating and tell the peers how this process ended. `ok`: normally. Else it
        failed; it then watches its peers a while longer (until each has ended too, or for
        `stale_s`), to name a peer that was lost before it.

        `wait_for_peers` (with `ok`): return only once every peer has ended too, still beating
        and watching meanwhile. Processes then exit together: JAX's shutdown barrier at exit
        waits only seconds, and process 0 may still be writing the run's report."""
        if ok:
            self._set(_DONE, "1")
            if wait_for_peers:
                self._wait_until_peers_end()
        else:
            self._set(_FAILED, f"process {self._me} failed (its log says why)")
            self._beating.clear()
            self._thread.join(timeout=self._stale_s + 2 * self._beat_s)
        self._stopped.set()
        self._thread.join()

    def _wait_until_peers_end(self) -> None:
        """Until every peer has said it ended, the store is gone, or the watch thread stopped
        (it named a lost peer)."""
        peers = [p for p in range(self._count) if p != self._me]
        while self._thread.is_alive():
            try:
                entries = dict(self._client.key_value_dir_get(_ROOT))
            except Exception:  # noqa: BLE001 - the store is gone: nothing left to wait for
                return
            if all(f"{_DONE}{p}" in entries or f"{_FAILED}{p}" in entries for p in peers):
                return
            time.sleep(self._beat_s)

    def _set(self, prefix: str, value: str) -> None:
        with contextlib.suppress(Exception):  # a store that is gone: the peers will notice
            self._client.key_value_set(f"{prefix}{self._me}", value, allow_overwrite=True)

    def _lost(self, cause: str) -> None:
        # The cause goes to the store too: a third process names it, not this one.
        self._set(_FAILED, cause)
        self._on_lost(
            f"{cause}. Process {self._me} stops too; the same command resumes the run from its "
            f"last checkpoint"
        )

    def _watch(self) -> None:
        beat, started = 0, time.monotonic()
        seen = {p: (None, started) for p in range(self._count) if p != self._me}
        failing: set[int] = set()  # peers seen failed at the last beat
        while not self._stopped.wait(self._beat_s):
            beat += 1
            try:
                if self._beating.is_set():
                    self._set_beat(beat)
                entries = dict(self._client.key_value_dir_get(_ROOT))  # one read per beat
            except Exception as error:  # noqa: BLE001 - any failure of the store means the same
                if not self._stopped.is_set():
                    self._lost(
                        f"process {self._me} lost the coordination service on process 0 "
                        f"({type(error).__name__}); process 0 stopped or its host was lost"
                    )
                return
            if self._stopped.is_set():
                return
            causes = {p: entries.get(f"{_FAILED}{p}") for p in seen}
            failed = [p for p, cause in causes.items() if cause is not None]
            # A peer failed first: stop with it, one beat later, so that processes failing on
            # the same error at once (a config mismatch) each end with their own message.
            if failed and self._beating.is_set():
                if failed[0] in failing:
                    self._lost(causes[failed[0]])
                    return
                failing.add(failed[0])
            ended = {p for p in seen if f"{_DONE}{p}" in entries} | set(failed)
            lost = _stale_peer(seen, entries, ended, time.monotonic(), self._stale_s)
            if lost is not None:
                self._lost(
                    f"process {lost} stopped answering: no heartbeat for {self._stale_s:g} s "
                    f"(it was killed, or its host was lost)"
                )
                return
            if not self._beating.is_set() and len(ended) == len(seen):
                return  # this process failed, and every peer has ended: nothing to name

    def _set_beat(self, beat: int) -> None:
        self._client.key_value_set(f"{_BEAT}{self._me}", str(beat), allow_overwrite=True)


def _stale_peer(
    seen: dict[int, tuple[str | None, float]],
    entries: dict[str, str],
    ended: set[int],
    now: float,
    stale_s: float,
) -> int | None:
    """Update `seen` (peer -> its last beat and when it changed) and return a peer whose beat
    is older than `stale_s` and that has not ended, if any."""
    for peer, (last, since) in seen.items():
        if peer in ended:
            continue
        value = entries.get(f"{_BEAT}{peer}")
        if value != last:
            seen[peer] = (value, now)
        elif now - since > stale_s:
            return peer
    return None

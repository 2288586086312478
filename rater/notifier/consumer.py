"""Faust's aiokafka consumer with the two things the offsets keeper needs to read a
record again while Faust's fetch loop is in the middle of a batch.

Faust hands records out of a fetched batch one by one, and drops any record below the
partition's *read offset* (the last offset it handed). A plain ``Consumer.seek`` sets
that read offset back, but the batch already in memory goes on being handed out and
moves the read offset past the target again, so the records read again from the target
are dropped — until a backlog has cleared. (Pausing a partition does not stop that
batch either while the partition's agent is under buffer pressure: Faust keeps handing
out a "buffered" partition's records, and takes it back into the fetch when the
pressure drops.)

So the keeper seeks back in two steps (:meth:`rater.notifier.offsets.OffsetKeeper`):
:meth:`NotifierConsumer.hold` stops handing the partition's records at once — the rest
of the batch in memory included — then, once the fetch loop has started a fetch after
that (:attr:`NotifierConsumer.fetches`: the batch it was in is over), it seeks and
:meth:`NotifierConsumer.release`\\ s the partition, whose next records are the target's.

And two things that keep Faust's one fetch loop from waiting on a full agent buffer (with
the fetch bound, :func:`rater.notifier.app.max_poll_records`): a release, and a buffer
Faust clears for a rebalance (:class:`DrainedWhenCleared`), keep Faust's buffer pressure
right; aiokafka is handed a copy of the partitions to fetch (docs/notifications.md,
"Seeking back under a backlog").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.transports import TransportT
from mode.utils.queues import ThrowableQueue


class NotifierConsumer(faust_aiokafka.Consumer):
    """Counts its fetches; holds and releases single partitions."""

    fetches: int = 0
    """How many fetches Faust's fetch loop has started (each after handing out the last batch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: set[TP] = set()
        self._pressured: set[TP] = set()
        """Partitions whose agent's buffer said "full" and not yet "drained" (Faust's
        buffer pressure, which a hold must not lose: see :meth:`release`)."""

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        # A copy: Faust hands its live set, and aiokafka fetches every partition when the
        # set it holds is empty — as a hold or Faust's buffer pressure can make it while
        # the fetch waits — past both the hold and the fetch bound (max_poll_records).
        # (Faust's own hand-out still checks the live set, record by record.)
        return await super()._getmany(None if active_partitions is None else set(active_partitions), timeout)

    async def _wait_next_records(self, timeout: float) -> Any:
        self.fetches += 1  # (called with no partition to fetch too: it then waits a second)
        records, active = await super()._wait_next_records(timeout)
        if records and self._held:
            # aiokafka fetches every partition when it is asked for none: what it brings of
            # a held partition is from before the seek to come, and never handed
            records = {tp: batch for tp, batch in records.items() if tp not in self._held}
        return records, active

    def hold(self, tp: TP) -> None:
        """Hand out none of ``tp``'s records from now on, not even the rest of a batch
        already fetched, and fetch none, until :meth:`release` (or a rebalance: Faust
        resumes every assigned partition after one)."""
        self._held.add(tp)
        self.pause_partitions([tp])
        self._buffered_partitions.discard(tp)

    def release(self, tp: TP) -> None:
        """Hand out ``tp``'s records again, and fetch it unless its agent's buffer is
        still under pressure: then Faust's "drained" callback takes it back into the
        fetch, as it would have without the hold."""
        self._held.discard(tp)
        self._paused_partitions.discard(tp)
        if tp in self._pressured:
            self._buffered_partitions.add(tp)
        else:
            self._get_active_partitions().add(tp)

    def forget(self, tp: TP) -> None:
        """``tp`` is no longer this consumer's: not held any more, and not fetched."""
        self._held.discard(tp)
        self._paused_partitions.discard(tp)

    def held(self, tp: TP) -> bool:
        return tp in self._held

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        self._held.difference_update(tps)
        super().resume_partitions(tps)

    def on_buffer_full(self, tp: TP) -> None:
        self._pressured.add(tp)
        if tp not in self._held:  # a held partition stays out of the fetch, and is handed nothing
            super().on_buffer_full(tp)

    def on_buffer_drop(self, tp: TP) -> None:
        self._pressured.discard(tp)
        if self.app.rebalancing:  # a buffer Faust emptied for a rebalance: it resumes what it assigns itself
            self._buffered_partitions.discard(tp)
            return
        super().on_buffer_drop(tp)


class DrainedWhenCleared(ThrowableQueue):  # type: ignore[type-arg]
    """Faust's agent buffer (mode's queue), whose ``clear`` — Faust empties every buffer
    for a rebalance — also calls the "drained" callbacks still pending, as an empty
    buffer does when an agent takes from it. mode's own keeps them; Faust then makes a
    second pair for each partition it assigns, and when the stale "drained" fires first,
    the partition is fetched again while its new "full" is pending — so Faust never takes
    it out of the fetch again, the buffer fills, and its one fetch loop waits on it."""

    def clear(self) -> None:
        super().clear()
        self.maybe_endorse_pressure_drop()


class NotifierApp(faust.App):
    """A Faust app whose consumer is a :class:`NotifierConsumer`."""

    def FlowControlQueue(self, maxsize: int | None = None, *,  # Faust's name
                         clear_on_resume: bool = False) -> ThrowableQueue:  # type: ignore[type-arg]
        return DrainedWhenCleared(maxsize=maxsize, flow_control=self.flow_control, clear_on_resume=clear_on_resume)

    def _new_transport(self) -> TransportT:
        transport = super()._new_transport()
        transport.Consumer = NotifierConsumer  # type: ignore[misc]  # the transport's class attribute, for this app
        return transport

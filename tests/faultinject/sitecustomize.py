"""Fault injection for the notifier's tests: Faust's consumer drops one fetched record.

Put this directory on ``PYTHONPATH`` of a ``rater notify`` process and set
``RATER_TEST_DROP=topic:partition:offset``: the record at that offset is fetched but not
handed on the first time Faust's ``Consumer.getmany`` meets it (later reads of it —
after a seek back — hand it normally). That is the drop Faust 0.15's own ``getmany``
makes around a rebalance: aiokafka has moved past the record, the agent never sees it;
the notifier's ``OffsetKeeper`` must find it and seek back to it
(``tests/test_notifier_seek.py``).

``RATER_TEST_SLOW_YIELD_S=seconds`` (with ``RATER_TEST_DROP``) also makes the fetch loop
wait that long before handing each record of the drop's topic: a loop that is in the
middle of a batch most of the time, as one starved of CPU or waiting for the producer's
buffer is — when a seek lands, the rest of the batch is still to be handed.

Faust is not imported here: an import hook patches ``faust.transport.consumer`` when the
process imports it, on the base ``Consumer`` class (the drivers' consumers inherit its
``getmany``). A process without the variable, or one that never imports Faust, is not
touched. Never part of the product: the directory has no ``__init__.py`` and nothing
imports it.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import AsyncIterator, Sequence
from types import ModuleType
from typing import Any

_TARGET_MODULE = "faust.transport.consumer"


def _parse(spec: str) -> tuple[str, int, int]:
    topic, partition, offset = spec.rsplit(":", 2)
    return topic, int(partition), int(offset)


def _patch(module: ModuleType, drop: tuple[str, int, int]) -> None:
    """Wrap ``module.Consumer.getmany`` so the record at ``drop`` is skipped once (and
    each of its topic's records is handed ``RATER_TEST_SLOW_YIELD_S`` late)."""
    slow_s = float(os.environ.get("RATER_TEST_SLOW_YIELD_S") or 0)
    base: Any = module.Consumer
    original = base.getmany
    dropped = False

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        nonlocal dropped
        records = original(self, timeout)
        try:
            async for tp, message in records:
                if not dropped and (tp.topic, tp.partition, message.offset) == drop:
                    dropped = True
                    sys.stderr.write(f"faultinject: dropped {tp.topic}[{tp.partition}] offset {message.offset}"
                                     " (fetched, not handed)\n")
                    sys.stderr.flush()
                    continue
                if slow_s and tp.topic == drop[0]:
                    await asyncio.sleep(slow_s)
                yield tp, message
        finally:
            await records.aclose()

    getmany.__doc__ = original.__doc__
    base.getmany = getmany


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then patches the module it made."""

    def __init__(self, inner: importlib.abc.Loader, drop: tuple[str, int, int]) -> None:
        self.inner = inner
        self.drop = drop

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _patch(module, self.drop)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``faust.transport.consumer`` as the path finder would, with a patching loader."""

    def __init__(self, drop: tuple[str, int, int]) -> None:
        self.drop = drop

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET_MODULE:
            return None
        sys.meta_path.remove(self)  # once is enough
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader, self.drop)
        return spec


_SPEC = os.environ.get("RATER_TEST_DROP")
if _SPEC:
    sys.meta_path.insert(0, _Finder(_parse(_SPEC)))

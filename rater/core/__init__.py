"""The pure rating core: ``(state, input) -> (state, events)``; no I/O, clock or randomness.

Nothing in this package may import Faust, Kafka, aiohttp, the clock or the shell.
"""

"""The edge between Kafka bytes and the core: decode and validate inputs, encode outputs.

``decode`` turns one consumed record into a core input or a :class:`Refusal` (which the
shell publishes as a dead letter keeping the original bytes). Nothing here raises on bad
input: a message that cannot be used is data, not an error.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from rater import schemas, wire
from rater.core.inputs import (
    AutoRechargeConfigured,
    Cdr,
    FundsAdded,
    Input,
    LicensesAssigned,
    RechargeResult,
    TenantUpserted,
    UserRemoved,
)
from rater.core.steps import SCHEMA_VERSION
from rater.core.times import MAX_TIME_US, MIN_TIME_US, TimeFormatError, format_time_us, parse_time_us

MAX_VALUE_BYTES = 64 * 1024
MAX_DEPTH = 32
"""How deeply an input may nest arrays and objects (the contract's own events nest 2
levels; an unknown extra field may nest more, up to this). Deeper is a ``schema`` dead
letter, decided the same way on every run — not left to where a recursive decoder
happens to run out of stack."""
_TENANT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # fullmatch: ``$`` would take a final newline


@dataclass(slots=True)
class Record:
    """One consumed Kafka record, as the edge sees it. ``topic`` is the logical name
    (without the operator's prefix). Not changed once made (not ``frozen``: a frozen
    dataclass's ``__init__`` costs twice as much, and the worker makes one per message)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    @property
    def position(self) -> str:
        """``topic/partition/offset``: names this message for derived event ids."""
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a record cannot be applied (a SPEC §2 dead-letter reason and a sentence)."""

    reason: str
    message: str
    tenant_id: str | None = None


def decode(record: Record) -> Input | Refusal:
    """Validate a record and build the core input it carries.

    The fast path decodes and validates in one compiled pass (:mod:`rater.wire`);
    anything it refuses goes through the JSON Schema validator, which has the last word
    and words the dead letter."""
    value = record.value or b""
    if len(value) > MAX_VALUE_BYTES:
        return Refusal("too_large", f"value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES}")
    try:
        key = (record.key or b"").decode("utf-8")
    except UnicodeDecodeError:
        return Refusal("bad_key", "the key is not UTF-8")
    if not _TENANT_ID.fullmatch(key):
        return Refusal("bad_key", f"the key {key[:80]!r} is not a tenant id (1-64 of A-Za-z0-9._-)")
    if value.count(b"[") + value.count(b"{") > MAX_DEPTH:  # only then can it nest that deep
        too_deep = _too_deep(value)
        if too_deep is not None:
            return Refusal("schema", too_deep, key)
    decoder = wire.DECODERS.get(record.topic)
    if decoder is None:
        return decode_with_schema(record, key, value)
    fast = _decode_fast(decoder, key, value)
    if not isinstance(fast, str):
        return fast
    reference = decode_with_schema(record, key, value)
    if isinstance(reference, Refusal):
        return reference
    # The stricter path wins: the fast one refused what the schema path would take (a
    # whole number written as 60.0, say). Never applied: a refusal, in the fast path's words.
    return Refusal("schema", f"{type(reference).__name__}: {fast}"[:500], key)


def _decode_fast(decoder: msgspec.json.Decoder[Any], key: str, value: bytes) -> Input | Refusal | str:
    """The msgspec path: the input, a refusal it can word itself (key mismatch, rules past
    the schema), or why it refused (a ``str``: the JSON Schema path then decides)."""
    try:
        message = decoder.decode(value)
    except msgspec.MsgspecError as exc:
        return str(exc)
    except RecursionError:
        # only for what is not JSON at all (valid JSON this deep was refused before): the
        # schema path calls it invalid_json, whatever depth msgspec gave up at
        return "nested too deeply to decode"
    if type(message) not in _FROM_WIRE:
        return "not an input of this topic"
    # the reference path's order: schema, then the key, then rules past the schema
    invalid: Exception | None = None
    try:
        built: Input | None = _FROM_WIRE[type(message)](message)
    except (TimeFormatError, _Invalid) as exc:
        built, invalid = None, exc
    if built is None and invalid is None:
        return "repeated capabilities"
    if message.tenant_id != key:
        return Refusal("key_mismatch", f"key {key!r} but tenant_id {message.tenant_id!r}", key)
    if built is not None:
        return built
    return Refusal("schema", f"{message.__struct_config__.tag}: {invalid}", key)


def _too_deep(value: bytes) -> str | None:
    """Why ``value`` nests deeper than :data:`MAX_DEPTH`, or None (also for what is not
    JSON at all: the decoders say so). Without recursion: a walk with a stack."""
    try:
        document = orjson.loads(value)  # refuses over 1,024 levels by itself
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            return f"nested deeper than {MAX_DEPTH} levels of arrays and objects"
        return None
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    return f"nested deeper than {MAX_DEPTH} levels of arrays and objects"
                stack.append((child, depth + 1))
    return None


def decode_with_schema(record: Record, key: str, value: bytes) -> Input | Refusal:
    """The reference path: ``orjson`` and the draft 2020-12 validator of ``schemas/``
    (about 300 µs a CDR). Decides whatever the fast path refused."""
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Refusal("invalid_json", f"not JSON: {exc}"[:300], key)
    if not isinstance(payload, dict):
        return Refusal("schema", f"the value is a JSON {type(payload).__name__}, not an object", key)
    kind = payload.get("type")
    if kind not in schemas.INPUT_TYPES.get(record.topic, ()):
        return Refusal("unknown_type", f"type {str(kind)[:80]!r} is not an input of topic {record.topic}", key)
    error = schemas.first_error(kind, payload)
    if error is not None:
        return Refusal("schema", f"{kind}: {error}", key)
    if payload["tenant_id"] != key:
        return Refusal("key_mismatch", f"key {key!r} but tenant_id {payload['tenant_id']!r}", key)
    try:
        made: Input = _BUILDERS[kind](payload)
        return made
    except (TimeFormatError, _Invalid) as exc:
        return Refusal("schema", f"{kind}: {exc}", key)


class _Invalid(ValueError):
    """A rule the schema cannot express (e.g. end before start)."""


def _cdr(p: dict[str, Any]) -> Cdr:
    start_us, end_us = parse_time_us(p["start_time"]), parse_time_us(p["end_time"])
    parse_time_us(p["occurred_at"])  # checked like every envelope's, not used
    if end_us < start_us:
        raise _Invalid("end_time is before start_time")
    duration = p["duration_seconds"]
    if isinstance(duration, float):  # JSON Schema's "integer" accepts 60.0: the core gets the int 60
        duration = int(duration)
    return Cdr(
        tenant_id=p["tenant_id"],
        usage_id=p["usage_id"],
        call_id=p["call_id"],
        conference_id=p["conference_id"],
        user_id=p["user_id"],
        user_location=p["user_location"],
        call_type=p["call_type"],
        number_type=p["number_type"],
        caller_number=p["caller_number"],
        destination_number=p["destination_number"],
        start_us=start_us,
        end_us=end_us,
        duration_s=duration,
    )


_BUILDERS: dict[str, Any] = {
    "cdr": _cdr,
    "tenant_upserted": lambda p: TenantUpserted(
        p["tenant_id"], p["command_id"], p["country"], p["currency"], p["billing_model"],
        p.get("low_balance_threshold"), parse_time_us(p["occurred_at"]),
    ),
    "licenses_assigned": lambda p: LicensesAssigned(
        p["tenant_id"], p["command_id"], p["user_id"], p["usage_location"], tuple(p["capabilities"]),
        parse_time_us(p["occurred_at"]),
    ),
    "user_removed": lambda p: UserRemoved(p["tenant_id"], p["command_id"], p["user_id"],
                                          parse_time_us(p["occurred_at"])),
    "funds_added": lambda p: FundsAdded(
        p["tenant_id"], p["command_id"], p["amount"], p["currency"], parse_time_us(p["purchased_at"]),
        parse_time_us(p["occurred_at"]),
    ),
    "auto_recharge_configured": lambda p: AutoRechargeConfigured(
        p["tenant_id"], p["command_id"], p["enabled"], p["trigger_amount"], p["recharge_amount"],
        parse_time_us(p["occurred_at"]),
    ),
    "recharge_result": lambda p: RechargeResult(
        p["tenant_id"], p["request_id"], p["status"], p["amount"], p["currency"], p.get("reason"),
        parse_time_us(p["processed_at"]), parse_time_us(p["occurred_at"]),
    ),
}


def _cdr_from(m: wire.CdrIn) -> Cdr:
    start_us, end_us = parse_time_us(m.start_time), parse_time_us(m.end_time)
    parse_time_us(m.occurred_at)  # checked like every envelope's, not used
    if end_us < start_us:
        raise _Invalid("end_time is before start_time")
    return Cdr(m.tenant_id, m.usage_id, m.call_id, m.conference_id, m.user_id, m.user_location, m.call_type,
               m.number_type, m.caller_number, m.destination_number, start_us, end_us, m.duration_seconds)


def _licenses_from(m: wire.LicensesAssignedIn) -> LicensesAssigned | None:
    if len(set(m.capabilities)) != len(m.capabilities):
        return None  # repeated capabilities: the schema's uniqueItems words the refusal
    return LicensesAssigned(m.tenant_id, m.command_id, m.user_id, m.usage_location, tuple(m.capabilities),
                            parse_time_us(m.occurred_at))


_FROM_WIRE: dict[type, Callable[[Any], Input | None]] = {
    wire.CdrIn: _cdr_from,
    wire.TenantUpsertedIn: lambda m: TenantUpserted(m.tenant_id, m.command_id, m.country, m.currency,
                                                     m.billing_model, m.low_balance_threshold,
                                                     parse_time_us(m.occurred_at)),
    wire.LicensesAssignedIn: _licenses_from,
    wire.UserRemovedIn: lambda m: UserRemoved(m.tenant_id, m.command_id, m.user_id, parse_time_us(m.occurred_at)),
    wire.FundsAddedIn: lambda m: FundsAdded(m.tenant_id, m.command_id, m.amount, m.currency,
                                             parse_time_us(m.purchased_at), parse_time_us(m.occurred_at)),
    wire.AutoRechargeConfiguredIn: lambda m: AutoRechargeConfigured(m.tenant_id, m.command_id, m.enabled,
                                                                     m.trigger_amount, m.recharge_amount,
                                                                     parse_time_us(m.occurred_at)),
    wire.RechargeResultIn: lambda m: RechargeResult(m.tenant_id, m.request_id, m.status, m.amount, m.currency,
                                                     m.reason, parse_time_us(m.processed_at),
                                                     parse_time_us(m.occurred_at)),
}


def dead_letter(record: Record, source_topic: str, refusal: Refusal) -> dict[str, Any]:
    """The ``dead_letter`` event for a refused record. It keeps the original key and value
    (a too-large value: its first 64 KiB and its size). ``occurred_at`` is the record's
    own Kafka timestamp (clamped into the years 1970–8999: a producer may set any 64-bit
    value), so a replay repeats the same bytes."""
    value = record.value
    event: dict[str, Any] = {
        "type": "dead_letter",
        "schema_version": SCHEMA_VERSION,
        "event_id": f"dead_letter/{record.position}",
        "tenant_id": refusal.tenant_id,
        "occurred_at": format_time_us(min(max(record.timestamp_ms * 1000, MIN_TIME_US), MAX_TIME_US - 1)),
        "source_topic": source_topic,
        "partition": record.partition,
        "offset": record.offset,
        "reason": refusal.reason,
        "message": refusal.message,
        "key_b64": None if record.key is None else base64.b64encode(record.key).decode(),
        "value_b64": None if value is None else base64.b64encode(value[:MAX_VALUE_BYTES]).decode(),
    }
    if value is not None and len(value) > MAX_VALUE_BYTES:
        event["value_size"] = len(value)
    return event


_ENCODER = msgspec.json.Encoder()


def encode(payload: dict[str, Any]) -> bytes:
    """An output event as compact JSON bytes (msgspec's encoder: the same bytes as
    ``orjson.dumps`` for these payloads — str, int, bool, None, lists, dicts — at half
    the cost for a rated CDR's 35 fields)."""
    return _ENCODER.encode(payload)

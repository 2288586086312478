"""The JSON Schemas (draft 2020-12) of the wire contract, loaded from ``schemas/``.

Every event type has one file named after it (``cdr.json``, ``rated_cdr.json``, ...);
``common.json`` holds shared definitions that the others reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry, Resource

from rater.resources import data_dir

INPUT_TYPES = {
    "cdrs": ("cdr",),
    "account-commands": (
        "tenant_upserted",
        "licenses_assigned",
        "user_removed",
        "funds_added",
        "auto_recharge_configured",
    ),
    "recharge-results": ("recharge_result",),
}

NOTIFIER_TYPES = {
    "notification-failures": ("notification_failed",),
    **{f"notify-retry-{level}": ("notification_retry",) for level in range(1, 5)},
}
"""The records ``rater notify`` writes (not the rater's: the worker never reads nor
writes them); topics/topics.toml declares their topics."""


def enum(event_type: str, field: str) -> list[str]:
    """The values a top-level string ``field`` of ``event_type`` may take (its ``enum``)."""
    values = _registry()[1][event_type]["properties"][field]["enum"]
    return [value for value in values if isinstance(value, str)]


@cache
def _registry() -> tuple[Registry, dict[str, dict[str, Any]]]:
    schemas: dict[str, dict[str, Any]] = {}
    registry: Registry = Registry()
    for path in sorted(data_dir("schemas").glob("*.json")):
        schema = orjson.loads(path.read_bytes())
        Draft202012Validator.check_schema(schema)
        schemas[path.stem] = schema
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
    return registry, schemas


def schema_names() -> list[str]:
    """Every event type with a schema (``common`` excluded)."""
    return sorted(name for name in _registry()[1] if name != "common")


@cache
def ecma_pattern(pattern: str) -> re.Pattern[str]:
    """A schema ``pattern`` (ECMA-262, as JSON Schema says) as a Python regex. One
    difference matters: ECMA's ``$`` ends the string, Python's also matches before a final
    newline — ``"^[A-Z]{2}$"`` would take ``"US\\n"``. An unescaped ``$`` outside a
    character class becomes ``\\Z``."""
    out: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            out.append("\\Z")
            continue
        out.append(char)
    return re.compile("".join(out))


def _pattern(validator: Any, pattern: str, instance: Any, _schema: dict[str, Any]) -> Iterator[ValidationError]:
    """The ``pattern`` keyword with ECMA-262's ``$`` (:func:`ecma_pattern`)."""
    if validator.is_type(instance, "string") and not ecma_pattern(pattern).search(instance):
        yield ValidationError(f"{instance[:200]!r} does not match {pattern!r}")


UNIQUE_ITEMS_CHECKED = 1_000
"""Longer arrays are not looked at for repeats: every ``uniqueItems`` of the schemas has a
``maxItems`` below this, which refuses them first, for free (``tests/test_schemas.py``)."""


def _unique_items(validator: Any, unique: bool, instance: Any, _schema: dict[str, Any]) -> Iterator[ValidationError]:
    """``uniqueItems`` in linear time: jsonschema compares every pair of an array it cannot
    sort (12,000 items and one ``{}``: 28 s, the worker's loop blocked, every partition
    stalled). Items are hashed by their JSON value (``1`` equals ``1.0``, not ``true``)."""
    if unique and validator.is_type(instance, "array") and len(instance) <= UNIQUE_ITEMS_CHECKED:
        seen: set[object] = set()
        for item in instance:
            key = _json_value(item)
            if key in seen:
                yield ValidationError(f"has non-unique elements ({len(instance)} items)")
                return
            seen.add(key)


def _json_value(item: Any) -> object:
    """A hashable form of a JSON value that is equal exactly when JSON Schema says the
    values are equal (nesting is at most 32 levels by the time a validator runs)."""
    if isinstance(item, bool) or item is None or isinstance(item, str):
        return (type(item).__name__, item)
    if isinstance(item, int | float):
        return ("number", int(item) if isinstance(item, float) and item.is_integer() else item)
    if isinstance(item, list):
        return ("array", tuple(_json_value(x) for x in item))
    if isinstance(item, dict):
        return ("object", frozenset((k, _json_value(v)) for k, v in item.items()))
    return ("other", repr(item))


Validator = validators.extend(Draft202012Validator, {"pattern": _pattern, "uniqueItems": _unique_items})
"""Draft 2020-12 with JSON Schema's own (ECMA-262) meaning of ``$`` in patterns, and a
``uniqueItems`` that costs linear time whatever the array holds."""


@cache
def validator(event_type: str) -> Any:
    """A compiled validator for ``event_type``; ``KeyError`` if it has no schema."""
    registry, schemas = _registry()
    return Validator(schemas[event_type], registry=registry)


@cache
def definition_validator(name: str) -> Any:
    """A compiled validator for ``common.json``'s ``$defs/{name}`` (``notify``)."""
    registry, schemas = _registry()
    if name not in schemas["common"]["$defs"]:
        raise KeyError(name)
    return Validator({"$ref": f"{schemas['common']['$id']}#/$defs/{name}"}, registry=registry)


def definition_error(name: str, payload: Any) -> str | None:
    """The first error of ``payload`` against ``common.json#/$defs/{name}``, as :func:`first_error`."""
    error = next(iter(definition_validator(name).iter_errors(payload)), None)
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"[:500]


def first_error(event_type: str, payload: Any) -> str | None:
    """The first schema error for ``payload`` as one line, or None if valid."""
    # The first error only, in the schema's order: looking for more costs (a 16,000-item
    # array past maxItems would have every item validated), and a schema lists its cheap
    # checks (maxItems) before the per-item ones.
    error = next(iter(validator(event_type).iter_errors(payload)), None)
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"[:500]

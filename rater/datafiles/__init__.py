"""Reading the operator-replaceable TOML data files: the error type and the checks they share.

Every error names the file, the entry, the field and the bad value, written the way the
file writes it (``[[version]] #2 "2027-01" [[version.rate]] #17 (prefix "44", class
"outbound"): increment = "30": ...``), so an operator can fix a file without reading code.
"""

from __future__ import annotations

import datetime
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
"""The data-file format this rater reads (the ``format`` key of each file)."""


class DataFileError(ValueError):
    """A data file the rater cannot use; the message says where and why."""


def toml_text(value: Any) -> str:
    """``value`` written as TOML writes it: ``"44"``, ``30``, ``0.02``, ``["a", "b"]``."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key_text(k)} = {toml_text(v)}" for k, v in value.items()) + " }"
    return repr(value)


def key_text(key: str) -> str:
    """A TOML key: bare when it can be, quoted otherwise (``US``, ``"*"``)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed TOML file, or a :class:`DataFileError` saying it is missing or broken."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFileError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot read the {what} file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(f"{path}: not valid TOML: {exc}") from None


@dataclass(frozen=True, slots=True)
class Entry:
    """One place in a data file (a table or an array-of-tables element), for messages."""

    path: Path
    where: str

    def error(self, message: str) -> DataFileError:
        """An error located at this entry."""
        return DataFileError(f"{self.path}: {self.where}: {message}")

    def bad(self, name: str, value: Any, problem: str) -> DataFileError:
        """An error about field ``name`` holding ``value``."""
        return self.error(f"{name} = {toml_text(value)}: {problem}")

    def only_keys(self, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
        """Refuse keys this format does not know (a typo must not be silently ignored)."""
        known = tuple(allowed)
        for key in table:
            if key not in known:
                raise self.error(f"unknown field {toml_text(key)} (known: {', '.join(known)})")

    def required(self, table: Mapping[str, Any], name: str) -> Any:
        """The value of a field that must be present."""
        if name not in table:
            raise self.error(f"missing field {toml_text(name)}")
        return table[name]

    def string(self, table: Mapping[str, Any], name: str, pattern: str, meaning: str) -> str:
        """A required string field that fully matches ``pattern``."""
        value = self.required(table, name)
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            raise self.bad(name, value, f"must be {meaning}")
        return value

    def table(self, table: Mapping[str, Any], name: str, *, optional: bool = False) -> dict[str, Any]:
        """A field that is a TOML table (``{}`` when optional and absent)."""
        if optional and name not in table:
            return {}
        value = self.required(table, name)
        if not isinstance(value, dict):
            raise self.bad(name, value, "must be a table")
        return value

    def string_list(self, table: Mapping[str, Any], name: str, *, optional: bool = False) -> list[str]:
        """A field that is an array of strings (``[]`` when optional and absent)."""
        if optional and name not in table:
            return []
        value = self.required(table, name)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.bad(name, value, "must be an array of strings")
        return value

    def tables(self, table: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
        """A field that is an array of tables (``[[name]]``); absent means empty."""
        value = table.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.bad(name, value, f"must be an array of tables ([[{name}]])")
        return value

    def check_format(self, data: Mapping[str, Any]) -> None:
        """The file's ``format`` must be the one this rater reads."""
        value = self.required(data, "format")
        if isinstance(value, bool) or value != FORMAT:
            raise self.bad("format", value, f"this rater reads format {FORMAT}")

    def within(self, where: str) -> Entry:
        """A nested entry: ``[[version]] #2`` → ``[[version]] #2 [[version.rate]] #17``."""
        return Entry(self.path, f"{self.where} {where}")

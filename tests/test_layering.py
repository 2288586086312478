"""STYLE §1: the core is pure — it imports nothing from the shell, Kafka, Faust or the clock;
and imports flow one way inside the shell too: the driver's parts never import the driver."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "rater" / "core"
ALLOWED_STDLIB = {
    "__future__", "calendar", "collections", "dataclasses", "datetime", "enum", "functools",
    "hashlib", "itertools", "math", "operator", "re", "typing", "bisect", "heapq",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "random", "urandom"}


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def test_core_imports_only_itself_and_pure_stdlib() -> None:
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for name in _imports(ast.parse(path.read_text())):
            top = name.split(".")[0]
            if name.startswith("rater.core") or name.startswith(".") or top in ALLOWED_STDLIB:
                continue
            offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_core_never_reads_a_clock_or_randomness() -> None:
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in FORBIDDEN_CALLS:
                offenders.append(f"{path.name}:{node.lineno} .{node.func.attr}()")
    assert offenders == []


def test_the_layering_check_itself_catches_a_forbidden_import() -> None:
    tree = ast.parse("import faust\nfrom rater.shell import app\nfrom datetime import datetime\n")
    names = _imports(tree)
    assert [n for n in names if n.split(".")[0] not in ALLOWED_STDLIB and not n.startswith("rater.core")] == [
        "faust", "rater.shell"]


def test_importing_the_core_loads_no_kafka_or_faust() -> None:
    code = ("import sys, rater.core.engine, rater.core.state; "
            "bad = [m for m in ('faust', 'aiokafka', 'mode', 'rater.shell', 'rater.edge') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


SHELL = CORE.parent / "shell"
DRIVER_PARTS = ("store.py", "batches.py", "fetching.py")
"""The parts split off the driver (``rater/shell/driver.py``): the driver imports them, never the reverse."""


def test_the_driver_s_parts_import_nothing_of_the_driver_and_the_store_nothing_of_kafka() -> None:
    offenders = []
    for name in DRIVER_PARTS:
        for imported in _imports(ast.parse((SHELL / name).read_text())):
            if imported.startswith("rater.shell.driver") or (name == "store.py" and imported.startswith("aiokafka")):
                offenders.append(f"{name}: {imported}")
    assert offenders == []

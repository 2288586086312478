"""Use the mypyc-compiled rating core when a fresh build exists (``tools/compile_core.py``).

The compiled modules live apart from the sources (``.cache/compiled`` in a checkout, or
``RATER_COMPILED_DIR``) and are put in front of ``rater.core``'s package path only when
their manifest names exactly the current sources (sha256 per module) and this
interpreter's extension suffix. Anything else — no build, a stale build, another Python,
``RATER_PURE=1`` — keeps the pure modules, which behave the same (the core tests run on
both). :data:`CORE_BUILD` says which one this process uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
import warnings
from pathlib import Path

_CORE = Path(__file__).resolve().parent / "core"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / ".cache" / "compiled"


def _sources() -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(_CORE.glob("*.py")) if path.name != "__init__.py"}


def activate() -> str:
    """Put a fresh compiled core in front of the pure one; returns what the core runs as."""
    if os.environ.get("RATER_PURE"):
        return "pure (RATER_PURE is set)"
    where = Path(os.environ.get("RATER_COMPILED_DIR") or DEFAULT_DIR)
    manifest = where / "manifest.json"
    if not manifest.is_file():
        return "pure (no compiled build)"
    built = json.loads(manifest.read_text())
    if built.get("ext_suffix") != sysconfig.get_config_var("EXT_SUFFIX"):
        return f"pure (the build in {where} is for another Python)"
    if built.get("sources") != _sources():
        warnings.warn(f"the compiled core in {where} was built from other sources; running the pure core"
                      " (rebuild with `make core`)", RuntimeWarning, stacklevel=2)
        return "pure (the compiled build is stale)"
    if "rater.core.engine" in sys.modules:
        return "pure (the core was imported before rater)"
    import rater.core  # the package only: its modules load after the path change  # noqa: PLC0415

    sys.path.append(str(where))  # mypyc's shared runtime module of the build
    rater.core.__path__.insert(0, str(where / "rater" / "core"))
    return f"compiled (mypyc, {where})"


CORE_BUILD = activate()

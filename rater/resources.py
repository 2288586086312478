"""Where the shipped data folders (``schemas/``, ``topics/``) are.

In a source checkout they are the top-level folders; in an installed wheel they are
bundled inside the package as ``rater/_bundled/<name>`` (see ``pyproject.toml``).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The folder ``name`` (``"schemas"`` or ``"topics"``) shipped with the project."""
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "_bundled" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the rater's {name}/ folder is missing (looked next to {_PACKAGE})")

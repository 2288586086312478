"""The mypyc-compiled core is used only when it was built from exactly these sources.

``make test`` builds it (``make core``) and runs every test on it, then the core tests
again with ``RATER_PURE=1``; these tests check the switch itself, in fresh interpreters.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rater._compiled import DEFAULT_DIR

PROBE = "import rater, rater.core.engine as e; print(rater.CORE_BUILD); print(e.__file__)"


def _probe(**env: str) -> tuple[str, str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"RATER_PURE", "RATER_COMPILED_DIR"}}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          check=True, timeout=60)
    build, module = done.stdout.splitlines()
    return build, module, done.stderr


def test_make_core_built_the_current_sources_and_the_rater_runs_them() -> None:
    assert (DEFAULT_DIR / "manifest.json").is_file(), "run `make core` (make test does) before the tests"
    build, module, _ = _probe()
    assert build.startswith("compiled"), build
    assert module.endswith(".so"), module


def test_rater_pure_forces_the_python_modules() -> None:
    build, module, _ = _probe(RATER_PURE="1")
    assert build == "pure (RATER_PURE is set)"
    assert module.endswith("engine.py")


def test_a_build_from_other_sources_is_never_used(tmp_path: Path) -> None:
    stale = tmp_path / "compiled"
    shutil.copytree(DEFAULT_DIR, stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    manifest["sources"]["engine.py"] = "0" * 64  # as if engine.py had been edited after the build
    (stale / "manifest.json").write_text(json.dumps(manifest))
    build, module, stderr = _probe(RATER_COMPILED_DIR=str(stale))
    assert build == "pure (the compiled build is stale)"
    assert module.endswith("engine.py")
    assert "built from other sources" in stderr


def test_no_build_means_the_pure_core(tmp_path: Path) -> None:
    build, module, _ = _probe(RATER_COMPILED_DIR=str(tmp_path / "nothing-here"))
    assert (build, module.endswith("engine.py")) == ("pure (no compiled build)", True)

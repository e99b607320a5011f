"""The analysis works from pixels only: it never imports the simulated specimen."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import scopeloop.analysis

ANALYSIS_DIR = Path(scopeloop.analysis.__file__).parent
FORBIDDEN = ("scopeloop.simulation", "scopeloop.microscope")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against scopeloop.analysis
                pkg = path.relative_to(ANALYSIS_DIR.parent.parent).with_suffix("").parts
                base = list(pkg[: len(pkg) - node.level])
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def test_no_analysis_module_imports_the_simulation() -> None:
    files = sorted(ANALYSIS_DIR.rglob("*.py"))
    assert len(files) >= 4
    offenders = {
        str(f.relative_to(ANALYSIS_DIR)): sorted(
            m for m in _imported_modules(f) if m.startswith(FORBIDDEN)
        )
        for f in files
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"analysis modules import the simulation: {offenders}"


def test_importing_all_analysis_modules_does_not_load_the_simulation() -> None:
    """Also catches indirect imports (through a helper module)."""
    names = [
        m.name for m in pkgutil.walk_packages([str(ANALYSIS_DIR)], prefix="scopeloop.analysis.")
    ]
    code = (
        "import importlib, sys\n"
        f"for n in {names!r}:\n"
        "    importlib.import_module(n)\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('scopeloop.simulation', "
        "'scopeloop.microscope')))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr

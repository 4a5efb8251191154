"""model/ is pure: it imports the standard library, tcplimits.config and itself, nothing else."""

import ast
import sys
from pathlib import Path

import tcplimits.model

ALLOWED = ("tcplimits.config", "tcplimits.model")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def _allowed(name: str) -> bool:
    if name.startswith("."):  # relative: inside model/ itself
        return True
    if name.split(".")[0] == "tcplimits":
        return name in ALLOWED or name.startswith(tuple(a + "." for a in ALLOWED))
    return name.split(".")[0] in sys.stdlib_module_names


def test_model_imports_only_config_model_and_the_standard_library():
    folder = Path(tcplimits.model.__file__).parent
    found = {f"{path.name}: {name}" for path in sorted(folder.glob("*.py"))
             for name in _imports(path) if not _allowed(name)}
    assert not found, sorted(found)

"""No module of proxy/ imports itself back, directly or through others, even under TYPE_CHECKING.

The layers between packages are checked by `lint-imports` (pyproject.toml, [tool.importlinter]); this checks
cycles between single modules, which a layers contract does not see inside one package or among unlisted ones.
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest


def import_cycles(package: str) -> set[str]:
    graph = grimp.build_graph(package, cache_dir=None)
    cycles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.add(" -> ".join((module, *back)))
    return cycles


def test_no_module_imports_itself_back() -> None:
    cycles = import_cycles("proxy")
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_a_cycle_hidden_under_type_checking_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from cyclic import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("cyclic") == {"cyclic.a -> cyclic.b -> cyclic.a", "cyclic.b -> cyclic.a -> cyclic.b"}

"""The shape of rp_core, checked from its source: no import cycles, and one package that writes files.

Read with `ast`, never imported: module-level and function-level imports count alike (a function-level
import is still a dependency, only a later one); imports under `if TYPE_CHECKING:` do not (they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run: the bodies of `if TYPE_CHECKING:` are left out (their `else:` is kept)."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for node in child.orelse:
                yield node
                yield from _runtime_nodes(node)
            continue
        yield child
        yield from _runtime_nodes(child)


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> set[str]:
    """The known modules an import statement names. `from pkg import sub` depends on `pkg` and on `pkg.sub`."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & set(known)
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    names = {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names & set(known)


def import_graph(package: str = "rp_core") -> dict[str, set[str]]:
    known = _modules(package)
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges: set[str] = set()
        for node in _runtime_nodes(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(module, path, node, known)
        graph[module] = edges - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_reads_function_level_and_relative_imports_and_skips_type_checking() -> None:
    graph = import_graph("rp_core")
    assert "rp_core.cli_evaluate" in graph["rp_core.cli"]  # imported inside create_cli()
    assert "rp_core.orchestrator" in graph["rp_core.work"]  # also imported where it runs
    assert "rp_core.models" not in graph["rp_core.errors"]  # only under TYPE_CHECKING


def test_rp_core_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph("rp_core"))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_files_package_imports_nothing_above_it() -> None:
    """rp_core.files is a floor the rest stands on: not even indirectly does it reach video or the manifest."""
    graph = import_graph("rp_core")
    reached: set[str] = set()
    todo = [m for m in graph if m == "rp_core.files" or m.startswith("rp_core.files.")]
    while todo:
        module = todo.pop()
        for target in graph[module] - reached:
            reached.add(target)
            todo.append(target)
    above = sorted(m for m in reached if m.startswith(("rp_core.video", "rp_core.manifest", "rp_core.session")))
    assert not above, above


# -- who writes files ------------------------------------------------------------------------------

_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}
_TEMPFILE_WRITERS = {"mkstemp", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile"}
#: (module, what) -> why it may write outside rp_core.files. Each writes only to a path rp_core.files handed it.
ALLOWED_WRITES: dict[tuple[str, str], str] = {
    ("rp_core.video.codec", "av.open(mode='w')"): (
        "PyAV's muxer opens the file itself; VideoWriter is given the temporary file of "
        "rp_core.files.write.publishing (rp_core.video.run), which syncs and publishes it"
    ),
    ("rp_core.video.samples", "av.open(mode='w')"): (
        "the same for a sample clip: PyAV writes the temporary file of the publishing block around it"
    ),
}


def _literal_mode(call: ast.Call, position: int) -> str | None:
    value: ast.expr | None = call.args[position] if len(call.args) > position else None
    for keyword in call.keywords:
        if keyword.arg == "mode":
            value = keyword.value
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value.value
    return None if value is None else "?"  # a mode computed at run time: counted as a write


def _writes(call: ast.Call) -> str | None:
    """What kind of file write a call is, or None."""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
    if name in ("write_bytes", "write_text"):
        return name
    if owner == "shutil" and name in ("copy", "copy2", "copyfile", "copyfileobj", "move"):
        return f"shutil.{name}"
    if name in _TEMPFILE_WRITERS:
        return f"tempfile.{name}"
    if name == "open" and owner == "os":
        argument = call.args[1] if len(call.args) > 1 else None
        flags = {n.attr for n in ast.walk(argument) if isinstance(n, ast.Attribute)} if argument else set()
        constants = {f for f in flags if f.startswith("O_")}
        # write flags, or flags computed elsewhere (a variable): counted as a write
        return "os.open(write flags)" if constants & _WRITE_FLAGS or (argument and not constants) else None
    if name == "open" and owner == "webbrowser":
        return None  # shows a page, writes no file
    if name == "open":
        position = 0 if isinstance(func, ast.Attribute) and owner not in ("io", "builtins", "av") else 1
        mode = _literal_mode(call, position)
        if mode is not None and (mode == "?" or set(mode) & set("wax+")):
            return f"{owner + '.' if owner in ('av', 'io') else ''}open(mode={mode!r})"
    return None


def file_writes(package: str) -> list[tuple[str, int, str]]:
    found = []
    for module, path in _modules(package).items():
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                what = _writes(node)
                if what is not None:
                    found.append((module, node.lineno, what))
    return found


def test_the_write_scan_sees_each_kind_of_write() -> None:
    source = """
import os, tempfile
open(p, "w"); open(p, mode="ab"); p.open("w"); p.write_text("x"); p.write_bytes(b"")
os.open(p, os.O_WRONLY | os.O_CREAT); tempfile.mkstemp(); shutil.copyfile(a, b); av.open(p, mode="w")
os.open(p, flags); open(p); open(p, "rb"); p.open(); os.open(p, os.O_RDONLY); av.open(p)
"""
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)]
    kinds = [w for w in map(_writes, calls) if w is not None]
    assert len(kinds) == 10, kinds


def test_only_rp_core_files_writes_files() -> None:
    found = file_writes("rp_core")
    writes = [
        (module, line, what)
        for module, line, what in found
        if not module.startswith("rp_core.files") and (module, what) not in ALLOWED_WRITES
    ]
    assert not writes, "\n".join(f"{module}:{line}: {what}" for module, line, what in writes)
    stale = set(ALLOWED_WRITES) - {(module, what) for module, _, what in found}
    assert not stale, f"allowed writes that no longer exist: {sorted(stale)}"
    assert any(module.startswith("rp_core.files") for module, _, _ in found)  # the scan does see the real writer


def test_rp_core_never_imports_a_plugin() -> None:
    """Core names no plugin: defaults and choices come from the plugins' own registration."""
    found = []
    for module, path in _modules("rp_core").items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [(module, node.lineno, name) for name in names if name.split(".")[0] == "rp_plugins"]
    assert not found

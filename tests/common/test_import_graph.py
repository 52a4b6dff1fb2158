"""fedward's modules import one another without cycles, at module level or inside functions.

A cycle hides behind a function-level import until the day someone moves it to the top; each one
also means two modules that cannot be understood (or tested) apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The three packages of fedward and the folders that hold them (pyproject.toml's package-dir).
PACKAGE_DIRS = {"fedward.common": "common", "fedward.server": "server", "fedward.client": "client"}


def module_files() -> dict[str, Path]:
    """Every fedward module and its file, generated gRPC code included."""
    modules: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def imported_modules(module: str, path: Path, files: dict[str, Path]) -> set[str]:
    """The fedward modules ``module`` imports anywhere in its file (packages' ``__init__`` aside)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            # ``from fedward.x import y`` imports the module fedward.x.y when there is one.
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names
            ]
        for name in names:
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module and files[name].name != "__init__.py":
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {m: imported_modules(m, p, files) for m, p in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    assert "fedward.common.datasets.bundled" in graph["fedward.common.run_config"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_no_import_cycles_between_fedward_modules() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_common_imports_neither_role() -> None:
    graph = import_graph()
    crossing = {
        module: sorted(n for n in imported if not n.startswith("fedward.common."))
        for module, imported in graph.items()
        if module.startswith("fedward.common.")
    }
    assert not {module: names for module, names in crossing.items() if names}


def roles_using(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """For each fedward.common module, the roles ("client", "server") that import it, directly or
    through other common modules."""
    users: dict[str, set[str]] = {m: set() for m in graph if m.startswith("fedward.common.")}
    for module, imported in graph.items():
        role = module.split(".")[1]
        for name in imported:
            if name in users and role != "common":
                users[name].add(role)
    changed = True
    while changed:
        changed = False
        for module, imported in graph.items():
            if module not in users:
                continue
            for name in imported:
                if name in users and not users[module] <= users[name]:
                    users[name] |= users[module]
                    changed = True
    return users


def test_common_holds_only_what_both_roles_use() -> None:
    # The package itself (fedward.common.datasets/__init__) holds nothing of its own.
    one_role = {
        module: sorted(roles)
        for module, roles in roles_using(import_graph()).items()
        if roles != {"client", "server"} and module != "fedward.common.datasets"
    }
    assert not one_role, f"one-role modules in fedward.common (move them to that role): {one_role}"


def test_the_role_check_sees_a_one_role_module() -> None:
    graph = {
        "fedward.client.a": {"fedward.common.x", "fedward.common.y"},
        "fedward.server.b": {"fedward.common.y"},
        "fedward.common.x": set(),
        "fedward.common.y": {"fedward.common.z"},
        "fedward.common.z": set(),
    }
    users = roles_using(graph)
    assert users["fedward.common.x"] == {"client"}
    assert users["fedward.common.z"] == {"client", "server"}


def test_no_module_runs_flowers_deprecated_in_process_simulation() -> None:
    """`fedward simulate` reaches Flower's simulation engine through `flwr run`
    (``fedward.server.simulation_engine``); Flower 1.42 deprecates ``flwr.simulation``'s
    in-process entry points, and none of fedward's modules may fall back on them."""
    users = []
    for module, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            users += [f"{module}: {n}" for n in names if n.split(".")[:2] == ["flwr", "simulation"]]
    assert users == []

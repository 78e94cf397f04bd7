"""The package's shape: imports form no circle and point one way (formats <- device/server <- cli; inside the
server: store <- fleet <- faces), no module over 400 lines, no class over 200 (README, Layout)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every ovota module and the ovota modules it imports, type-checking-only imports included."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ovota"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in modules)
        graph[name] = {t for t in targets if t != name and t in modules and not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_commands_do_not_import_the_shell() -> None:
    graph = import_graph()
    commands = [m for m in graph if m.startswith("ovota.device.console.") and not m.endswith((".shell", "console"))]
    assert len(commands) >= 7
    for name in commands:
        assert "ovota.device.console.shell" not in graph[name], name


def test_the_checker_sees_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


_FACES = ("ovota.server.devices", "ovota.server.api", "ovota.server.web")
_ABOVE_FLEET = (*_FACES, "ovota.server.app", "ovota.server.loops", "ovota.server.context")
# (importer prefix, prefixes it must not import)
LAYERS = (
    ("ovota.formats", ("ovota.server", "ovota.device", "ovota.sim", "ovota.cli")),
    ("ovota.device", ("ovota.server", "ovota.sim", "ovota.cli")),
    ("ovota.sim", ("ovota.server", "ovota.cli")),
    ("ovota.server", ("ovota.device", "ovota.sim", "ovota.cli")),
    ("ovota.server.store", ("ovota.server.fleet", *_ABOVE_FLEET)),
    ("ovota.server.fleet", _ABOVE_FLEET),
)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) for every import that points up or across the layers."""
    found = []
    for importer, targets in sorted(graph.items()):
        for layer, forbidden in LAYERS:
            if _within(importer, layer):
                found += [(importer, t) for t in sorted(targets) if any(_within(t, f) for f in forbidden)]
    return found


def test_imports_point_one_way() -> None:
    assert layer_violations(import_graph()) == []


def test_the_checker_sees_an_upward_import() -> None:
    graph = {
        "ovota.server.store.repository": {"ovota.server.fleet.rollouts"},
        "ovota.server.fleet.rollouts": {"ovota.server.store.repository", "ovota.server.devices.answers"},
        "ovota.server.devices.answers": {"ovota.server.fleet.rollouts", "ovota.server.store.repository"},
        "ovota.formats.otadata": {"ovota.cli.main"},
    }
    assert layer_violations(graph) == [
        ("ovota.formats.otadata", "ovota.cli.main"),
        ("ovota.server.fleet.rollouts", "ovota.server.devices.answers"),
        ("ovota.server.store.repository", "ovota.server.fleet.rollouts"),
    ]


MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 200


def oversized(root: Path = SRC) -> list[str]:
    """Modules over MAX_MODULE_LINES lines and classes over MAX_CLASS_LINES, as ``path[:class] lines``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(root)} {lines}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    found.append(f"{path.relative_to(root)}:{node.name} {size}")
    return found


def test_no_module_or_class_is_oversized() -> None:
    assert oversized() == []


def test_the_size_check_sees_a_large_class(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_CLASS_LINES))
    (tmp_path / "big.py").write_text(f"class Big:\n{body}\n")
    assert oversized(tmp_path) == ["big.py:Big 201"]


def test_the_server_is_in_rooms() -> None:
    """Each concern has a sub-package; at most four modules sit loose beside them."""
    server = SRC / "ovota" / "server"
    rooms = {p.name for p in server.iterdir() if (p / "__init__.py").exists()}
    loose = {p.name for p in server.glob("*.py")} - {"__init__.py"}
    assert {"store", "fleet", "devices", "api", "web"} <= rooms
    assert len(loose) <= 4, sorted(loose)

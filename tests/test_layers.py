"""The import graph of monitor/ and adapters/ has no circle and only goes down the layers.

Read from the source with ``ast`` (every ``import`` and ``from ... import``, at module level, in
functions and under ``TYPE_CHECKING`` alike: a typing-only import is still a dependency a reader
has to follow). Each module belongs to the unit of the longest prefix in :data:`LAYERS`; an import
from one unit to another must go to a strictly lower layer (units of one layer do not know each
other, except in :data:`WHOLE_LAYERS`). A new module outside every listed
prefix fails here: place it in the table on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from monitor import plugins

ROOT = Path(__file__).resolve().parents[1]

LAYERS: list[tuple[str, list[str]]] = [
    # 0. the domain model, errors, codecs and small shared tools: import nothing of ours above them
    (
        "foundation",
        [
            "monitor",
            "monitor.errors",
            "monitor.model",
            "monitor.codec",
            "monitor.dburl",
            "monitor.retry",
            "monitor.yamlmarks",
            "monitor.logs",
            "monitor.statelog",
            "monitor.inspection.model",
            "monitor.inspection.units",
            "monitor.registers",
            "monitor.libpages",
        ],
    ),
    # 1. the edges, each knowing the foundation only: protocols in, outputs out, detector settings,
    #    the live event hub, the store lock and runtime file
    (
        "edges",
        [
            "adapters",
            "monitor.sinks",
            "monitor.detect.config",
            "monitor.events",
            "monitor.runtime",
            "monitor.inspection.config",
            "monitor.inspection.xmlsafe",
        ],
    ),
    # 2. the site and program files (compose the edges' config types), the store
    ("configuration", ["monitor.config", "monitor.store"]),
    # 3. what works on the configuration: detection, part tracking, the simulation, config docs,
    #    the checks of ``monitor check``, what a reload changes, service units and notifications,
    #    Grafana dashboards
    (
        "domain",
        [
            "monitor.detect",
            "monitor.tracking",
            "monitor.sim",
            "monitor.configdoc",
            "monitor.preflight",
            "monitor.reload",
            "monitor.service",
            "monitor.grafana",
            "monitor.inspection",
            "monitor.users",
        ],
    ),
    # 4. the drift engine and the reports read from the store
    #    and people's commands to the core
    ("engine and reports", ["monitor.engine", "monitor.report", "monitor.feature_view", "monitor.commands", "monitor.capcache"]),
    # 5. the synchronous pipeline, the CLI's row views, offline analysis
    ("pipeline", ["monitor.pipeline", "monitor.queries", "monitor.analyze"]),
    # 6. the daemon's core (the one writer of alert state) and the plugin registry
    ("core", ["monitor.core", "monitor.plugins", "monitor.supervisor"]),
    # 7. what serves the core or finds plugins: control API, dashboard, metrics, discovery
    ("services", ["monitor.control", "monitor.dashboard", "monitor.metrics", "monitor.discovery", "monitor.offsets"]),
    # 8. the daemon: task wiring only
    ("daemon", ["monitor.daemon"]),
    # 9. what runs or talks to a daemon, and how ``monitor run`` sets up its process (the allocator)
    ("processes", ["monitor.demo", "monitor.acknowledge", "monitor.status", "monitor.allocator"]),
    # 10. the command line
    ("command line", ["monitor.cli", "monitor.__main__"]),
]

EXACT = {"monitor"}
"""Entries that name one module, not a prefix (the package's own ``__init__``)."""

WHOLE_LAYERS = {"foundation", "command line"}
"""Layers whose modules are one unit: they may import each other (never in a circle)."""

ADAPTERS_MAY_IMPORT = {"monitor.errors", "monitor.model", "monitor.retry"}
"""Adapters know protocols: of the monitor only the domain model, the errors and the retry toolkit."""


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in ("monitor", "adapters"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that ``name`` (a module, or a module's attribute) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            targets = [f"{origin}.{a.name}" for a in node.names] + [origin]
        else:
            continue
        for target in targets:
            ours = _resolve(target)
            if ours is not None and ours != module:
                out.add(ours)
    return out


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _unit(module: str) -> tuple[int, str]:
    """(layer index, unit prefix) of a module: its longest matching prefix in LAYERS."""
    best: tuple[int, str] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            covers = module == prefix or (prefix not in EXACT and module.startswith(prefix + "."))
            if covers and (best is None or len(prefix) > len(best[1])):
                best = (index, prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py, where it belongs")
    return best


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _unit(module)


def test_imports_only_go_down_the_layers() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        layer, unit = _unit(module)
        for target in sorted(targets):
            target_layer, target_unit = _unit(target)
            same_unit = target_unit == unit or (target_layer == layer and LAYERS[layer][0] in WHOLE_LAYERS)
            if not same_unit and target_layer >= layer:
                wrong.append(f"{module} ({LAYERS[layer][0]}) imports {target} ({LAYERS[target_layer][0]}): not a lower layer")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle() -> None:
    """Tarjan's strongly connected components over modules: every component is one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not circles, circles


def test_adapters_know_only_the_model_errors_and_retry() -> None:
    wrong = {
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module.startswith("adapters")
        for target in targets
        if not target.startswith("adapters") and target not in ADAPTERS_MAY_IMPORT
    }
    assert not wrong, sorted(wrong)


def test_the_plugin_registry_points_down_too() -> None:
    """The registry names its plugins as strings (imported on first use): they obey the layers as well."""
    layer, _ = _unit("monitor.plugins")
    targets = [p.adapter for p in plugins.SOURCES] + [p.config for p in plugins.SOURCES]
    targets += [p.discover for p in plugins.SOURCES if p.discover] + [p.sink for p in plugins.SINKS]
    for target in targets:
        module = target.partition(":")[0]
        assert module in MODULES, target
        assert _unit(module)[0] < layer, f"plugin {target} is not below the registry"


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("adapters.opcua.client", "monitor.config"),
        ("monitor.sinks.mqtt", "monitor.store"),
        ("monitor.dashboard.api", "monitor.daemon"),
    ],
)
def test_the_check_sees_the_edges_it_forbids(module: str, target: str) -> None:
    """The edges the old tree had would be caught: a lower module importing a higher one."""
    assert _unit(target)[0] >= _unit(module)[0]
    assert target not in GRAPH[module]

"""The package's shape: no import cycle anywhere (function-level imports included), data flowing one way."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffbalance"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffbalance"):
                for alias in node.names:  # `from pkg import module` imports that module
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("diffbalance")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, stack + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 40
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


STAGES = ["data", "imbalance", "rebalance", "generate", "classify", "evaluate", "report", "experiment", "cli"]
# the layers, lowest first: a module imports only from its own stage or a lower layer, never one beside or above it
# (generate/ above rebalance/: the generative methods build on its interface; evaluate/ — metrics and the FID
# networks — below classify/, which may use its Inception as a backbone; report/ renders what experiment/ gathers)
LAYERS = (("data",), ("imbalance", "evaluate", "report"), ("rebalance",), ("generate",), ("classify",),
          ("experiment",), ("cli",))


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    layer = {stage: i for i, stages in enumerate(LAYERS) for stage in stages}
    wrong = []
    for module, targets in graph.items():
        stage = module.split(".")[1] if module.count(".") else ""
        for target in targets:
            other = target.split(".")[1] if "." in target else ""
            if stage in layer and other in layer and other != stage and layer[other] >= layer[stage]:
                wrong.append(f"{module} → {target}")
    return sorted(wrong)


def test_stages_import_nothing_above_or_beside_them():
    """data → imbalance → rebalance → generate → classify; experiment runs them, cli wraps it (LAYERS)."""
    assert sorted({s for stages in LAYERS for s in stages}) == sorted(STAGES)
    assert upward_imports(import_graph()) == []


def test_the_layer_check_sees_what_issue_29_found():
    """The import the old rank table let through (rebalance and generate shared a rank), inside a function."""
    graph = {"diffbalance.rebalance.base": {"diffbalance.generate.guidance", "diffbalance.data.imageset"},
             "diffbalance.report.write": {"diffbalance.evaluate.metrics"}}
    assert upward_imports(graph) == ["diffbalance.rebalance.base → diffbalance.generate.guidance",
                                     "diffbalance.report.write → diffbalance.evaluate.metrics"]


def test_infrastructure_imports_no_stage_and_the_root_holds_only_stages():
    """infra/ (configs, errors, device, distributed, seeding, atomic, …) serves every stage and imports none; the
    package root holds the stage folders, infra/ and the entry points only."""
    wrong = [f"{m} → {t}" for m, targets in import_graph().items() if m.startswith("diffbalance.infra")
             for t in targets if t.split(".")[1] in STAGES]
    assert wrong == []
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py"]
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {*STAGES, "infra",
                                                                                           "presets"}

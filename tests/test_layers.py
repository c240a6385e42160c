"""Data flows one way through the stage folders: a module imports only from its own stage or from a lower layer.

Every `import diffbalance...` of every module counts — at the top, inside a function (a lazy import) or under
TYPE_CHECKING — so a lower stage cannot reach up even on first use. `diffbalance/__init__.py` (the public facade)
is exempt.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import diffbalance

# lowest first; stages in one layer do not import each other
LAYERS = (
    ("infra", "presets"),
    ("data",),
    ("imbalance", "evaluate", "report"),
    ("rebalance",),
    ("generate",),
    ("classify",),
    ("experiment",),
    ("cli",),
    ("__main__",),
)
LAYER = {stage: i for i, stages in enumerate(LAYERS) for stage in stages}
PACKAGE = Path(diffbalance.__file__).parent


def stage_of(module: str) -> str | None:
    """'diffbalance.generate.cfg.train' → 'generate'; the facade `diffbalance` → None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports_of(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("diffbalance"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("diffbalance")]
    return found


def upward_imports() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("diffbalance", *path.relative_to(PACKAGE).with_suffix("").parts))
        me = stage_of(module.removesuffix(".__init__"))
        if me is None:
            continue
        for target in imports_of(path):
            other = stage_of(target)
            if other is not None and other != me and LAYER[other] >= LAYER[me]:
                bad.append(f"{module} imports {target} ({me} → {other})")
    return bad


def test_every_stage_folder_has_a_layer():
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    stages |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert stages == set(LAYER), "give every stage folder its place in LAYERS"


def test_no_module_imports_a_stage_above_or_beside_its_own():
    assert upward_imports() == []


def test_the_check_sees_an_import_inside_a_function(tmp_path, monkeypatch):
    """A lazy upward import is found too (the check can fail)."""
    fake = tmp_path / "diffbalance"
    (fake / "rebalance").mkdir(parents=True)
    (fake / "generate").mkdir()
    for d in (fake, fake / "rebalance", fake / "generate"):
        (d / "__init__.py").write_text("")
    (fake / "rebalance" / "base.py").write_text("def f():\n    from diffbalance.generate.guidance import ho_weight\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert upward_imports() == ["diffbalance.rebalance.base imports diffbalance.generate.guidance "
                                "(rebalance → generate)"]

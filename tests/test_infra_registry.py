"""The one registry shape (infra.registry) behind every kind of plug-in: data sources, FID feature kinds,
rebalancers, classifiers, samplers."""

from __future__ import annotations

import sys

import pytest

from diffbalance.classify.models import CLASSIFIERS
from diffbalance.data.registry import SOURCES
from diffbalance.evaluate.fid.extractors import EXTRACTORS
from diffbalance.generate.schedulers import SAMPLERS
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.registry import Registry
from diffbalance.rebalance.base import REBALANCERS


def first(x):
    """the first one"""
    return x


def second(x):
    return x


def test_register_keeps_the_object_its_help_and_metadata():
    reg = Registry("widget")
    assert reg.register("a", help="one line", size=3)(first) is first
    entry = reg.entry("a")
    assert (entry.name, entry.help, entry.obj, entry["size"], entry.get("colour", "none")) == \
        ("a", "one line", first, 3, "none")
    assert reg.get("a") is first and "a" in reg and reg.available() == ["a"]
    assert reg.describe() == "a: one line"
    with pytest.raises(TypeError):
        entry.meta["size"] = 4  # read-only


def test_help_defaults_to_the_docstring_and_must_be_one_line():
    reg = Registry("widget")
    reg.register("a")(first)
    assert reg.entry("a").help == "the first one"
    with pytest.raises(ValueError, match="one non-empty line"):
        reg.register("b")(second)  # no docstring, no help
    with pytest.raises(ValueError, match="one non-empty line"):
        reg.register("c", help="two\nlines")(second)


def test_a_taken_name_is_refused_and_the_same_definition_again_is_not():
    reg = Registry("widget")
    reg.register("a", help="x")(first)
    reg.register("a", help="x")(first)  # the module imported again
    with pytest.raises(ValueError, match=r"widget 'a' is registered twice \(.*first, .*second\)"):
        reg.register("a", help="y")(second)
    reg.remove("a")
    reg.register("a", help="y")(second)
    assert reg.get("a") is second


def test_an_unknown_name_is_one_line_listing_the_names_and_the_key():
    reg = Registry("widget", hint="(or any/<name>)")
    reg.register("b", help="x")(first)
    reg.register("a", help="x")(second)
    with pytest.raises(DiffbalanceError) as err:
        reg.get("c")
    assert str(err.value) == "unknown widget 'c' — fix: use one of a, b (or any/<name>)"
    with pytest.raises(DiffbalanceError, match="unknown widget 'c' at tools.kind"):
        reg.entry("c", where="tools.kind")


def test_a_resolver_serves_an_open_family_of_names():
    reg = Registry("widget")
    reg.resolver("any/", lambda name: reg.add(name, first, help=f"{name} on demand") if name != "any/nope" else None)
    assert reg.entry("any/thing").help == "any/thing on demand"
    with pytest.raises(DiffbalanceError, match="unknown widget 'any/nope'"):
        reg.get("any/nope")


def test_built_ins_are_found_on_the_first_lookup_not_at_import(tmp_path, monkeypatch):
    pkg = tmp_path / "plugpkg"
    (pkg / "one").mkdir(parents=True)
    (pkg / "two").mkdir()
    (pkg / "__init__.py").write_text("")
    reg_module = ("from diffbalance.infra.registry import Registry\n"
                  "REG = Registry('widget', discover=('plugpkg.*.plugin',), modules=('plugpkg.extra',))\n")
    (pkg / "reg.py").write_text(reg_module)
    (pkg / "extra.py").write_text("from plugpkg.reg import REG\nREG.add('extra', 1, help='listed')\n")
    for sub in ("one", "two"):
        (pkg / sub / "__init__.py").write_text("")
        (pkg / sub / "plugin.py").write_text(f"from plugpkg.reg import REG\nREG.add('{sub}', 2, help='found')\n")
    (pkg / "two" / "other.py").write_text("raise RuntimeError('not a plugin module: never imported')\n")
    (pkg / "three").mkdir()  # a folder with the plug-in module alone (no __init__.py): found as well
    (pkg / "three" / "plugin.py").write_text("from plugpkg.reg import REG\nREG.add('three', 3, help='found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from plugpkg.reg import REG

    assert not any(m.startswith("plugpkg.one") for m in sys.modules)  # nothing found yet
    assert REG.available() == ["extra", "one", "three", "two"]
    assert "plugpkg.two.other" not in sys.modules


def test_select_filters_by_metadata():
    reg = Registry("widget")
    reg.add("a", 1, help="x", generative=True)
    reg.add("b", 2, help="x", generative=False)
    assert reg.select(generative=True) == ["a"]


@pytest.mark.parametrize("registry", [SOURCES, EXTRACTORS, REBALANCERS, CLASSIFIERS, SAMPLERS],
                         ids=lambda r: r.kind)
def test_every_kind_of_plug_in_is_one_registry_with_one_line_helps(registry):
    assert isinstance(registry, Registry) and registry.available()
    for entry in registry.entries():
        assert entry.help and "\n" not in entry.help


def test_a_generative_rebalancer_is_found_without_importing_diffusers():
    """Registration is cheap: the cfg module imports diffusers only when it trains or loads a generator."""
    import subprocess

    code = ("import sys; from diffbalance.rebalance.registry import available_rebalancers; "
            "assert 'cfg' in available_rebalancers(); print('diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_lazy_entry_is_listed_and_described_before_it_is_imported(tmp_path, monkeypatch):
    (tmp_path / "lazyplug.py").write_text("def make():\n    '''made on demand'''\n    return 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("widget")
    reg.lazy("late", "lazyplug:make", help="imported when used", cost="high")
    assert reg.available() == ["late"] and reg.describe() == "late: imported when used" and "late" in reg
    assert "lazyplug" not in sys.modules
    assert reg.get("late")() == 7 and reg.entry("late")["cost"] == "high" and "lazyplug" in sys.modules
    with pytest.raises(ValueError, match="module:attr"):
        reg.lazy("bad", "no_colon", help="x")


def test_installed_packages_add_plug_ins_through_an_entry_point_group(tmp_path, monkeypatch):
    import importlib.metadata as md

    (tmp_path / "thirdparty.py").write_text("def load(config):\n    return 'loaded'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    point = md.EntryPoint(name="their-data", value="thirdparty:load", group="diffbalance.test-plugins")
    monkeypatch.setattr(md, "entry_points", lambda group: [point] if group == "diffbalance.test-plugins" else [])
    reg = Registry("dataset", plugins="diffbalance.test-plugins")
    assert reg.available() == ["their-data"] and "thirdparty" not in sys.modules
    assert reg.get("their-data")(None) == "loaded"


def test_rebalancer_entries_say_which_generate():
    from diffbalance.rebalance.registry import generative_rebalancers, rebalancer_class

    assert generative_rebalancers() == ["cfg", "ldm", "ldm-img2img"]
    assert all(REBALANCERS.entry(n)["generative"] == rebalancer_class(n).generative for n in REBALANCERS.available())

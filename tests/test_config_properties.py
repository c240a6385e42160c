"""Property-based: any wrong-typed or odd value in any config section, or in any rebalancer's parameters, is either
accepted (it was valid) or a one-line DiffbalanceError naming the key — never another exception, never a guess."""

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffbalance.classify.config import TrainConfig
from diffbalance.data.sources import DataConfig
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.evaluate.fid.protocol import FidConfig
from diffbalance.experiment.config import ExperimentConfig
from diffbalance.generate.cfg.config import CFGTrainConfig
from diffbalance.imbalance.subset import ImbalanceConfig
from diffbalance.rebalance.registry import available_rebalancers, build_rebalancer, rebalancer_class

SECTIONS = {"data": DataConfig, "imbalance": ImbalanceConfig, "train": TrainConfig, "reference_train": TrainConfig,
            "fid": FidConfig, "cfg train": CFGTrainConfig}
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                              max_size=2),
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def expect_clean(call, key: str) -> None:
    try:
        call()
    except DiffbalanceError as err:
        text = str(err)
        assert "\n" not in text and " — fix: " in text
        assert key in text, f"the message does not name {key!r}: {text}"


@pytest.mark.parametrize("section", list(SECTIONS))
@SETTINGS
@given(data=st.data())
def test_every_section_rejects_odd_values_in_one_line(section, data):
    cls = SECTIONS[section]
    key = data.draw(st.sampled_from(fields(cls)))
    value = data.draw(ODD_VALUES)
    expect_clean(lambda: cls.from_dict({key: value}, path=section), key)


@pytest.mark.parametrize("section", ["data", "imbalance", "train", "reference_train", "fid"])
@SETTINGS
@given(data=st.data())
def test_odd_values_through_the_experiment_config(section, data):
    key = data.draw(st.sampled_from(fields(SECTIONS[section])))
    value = data.draw(ODD_VALUES)
    config = {"methods": ["none"], section: {key: value}}
    expect_clean(lambda: ExperimentConfig.from_dict(config), key)


@SETTINGS
@given(data=st.data())
def test_odd_values_for_top_level_keys(data):
    key = data.draw(st.sampled_from([k for k in fields(ExperimentConfig) if k != "methods"]))
    value = data.draw(ODD_VALUES)
    expect_clean(lambda: ExperimentConfig.from_dict({"methods": ["none"], key: value}), key)


@pytest.mark.parametrize("name", sorted(set(available_rebalancers())))
@SETTINGS
@given(data=st.data())
def test_every_rebalancer_rejects_odd_parameters_in_one_line(name, data):
    key = data.draw(st.sampled_from(fields(rebalancer_class(name))))
    value = data.draw(ODD_VALUES)
    expect_clean(lambda: build_rebalancer(name, {key: value}), key)

"""The progress bar's loss read-back: nothing before the first report, then the newest value sent."""

import torch

from diffbalance.infra.readout import AsyncScalar


def test_the_newest_sent_value_is_shown():
    shown = AsyncScalar(torch.device("cpu"))
    assert shown.fields() == {}
    shown.send(torch.tensor(2.5))
    shown.send(torch.tensor(1.25, dtype=torch.float64))
    assert shown.fields() == {"loss": 1.25}

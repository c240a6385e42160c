import json

import torch

from diffbalance.data.imageset import ImageSet
from diffbalance.evaluate.consistency import class_consistency


def test_class_consistency_per_class_and_overall():
    images = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor([0, 0, 1, 1, 1, 2])  # the "classifier" reads pixel (0, 0)
    fills = ImageSet(images, torch.tensor([0, 0, 1, 1, 2, 2]), ("a", "b", "c", "d"))
    result = class_consistency(lambda x: x[:, 0, 0, 0].long(), fills, batch_size=4)
    assert result["per_class"]["a"] == {"images": 2, "agreement_pct": 100.0}
    assert result["per_class"]["c"]["agreement_pct"] == 50.0
    assert result["per_class"]["d"] == {"images": 0, "agreement_pct": None}
    assert result["agreement_pct"] == round(500 / 6, 2)
    json.dumps(result)

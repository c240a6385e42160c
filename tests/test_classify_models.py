"""Contract tests over every registered classifier: shapes, the features/head split, no NaNs, the CIFAR stem."""

import pytest
import torch
from torch import nn

from diffbalance.classify.models import available_classifiers, build_classifier
from diffbalance.infra.errors import DiffbalanceError


@pytest.mark.parametrize("name", available_classifiers())
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_classifier_shapes_and_split(name, in_channels):
    torch.manual_seed(0)
    model = build_classifier(name, num_classes=5, in_channels=in_channels).eval()
    x = torch.randn(2, in_channels, 8, 8)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.shape == (2, model.feature_dim)
    assert logits.shape == (2, 5)
    assert torch.isfinite(feats).all() and torch.isfinite(logits).all()
    torch.testing.assert_close(logits, model.head(feats))  # forward = head ∘ forward_features


@pytest.mark.parametrize("name, dim", [("resnet18", 512), ("resnet50", 2048)])
def test_resnets_have_the_cifar_stem(name, dim):
    model = build_classifier(name, num_classes=10, in_channels=3)
    conv1 = model.body.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.padding == (1, 1)
    assert isinstance(model.body.maxpool, nn.Identity)
    assert model.feature_dim == dim and model.head.out_features == 10
    # a 32×32 image reaches layer4 at 4×4 (stride 8), not 1×1 as with the ImageNet stem
    with torch.no_grad():
        b = model.body.eval()
        x = b.layer3(b.layer2(b.layer1(b.relu(b.bn1(b.conv1(torch.zeros(1, 3, 32, 32)))))))
        assert b.layer4(x).shape[-2:] == (4, 4)


def test_grayscale_stem_takes_one_channel():
    assert build_classifier("resnet18", 10, 1).body.conv1.in_channels == 1


@pytest.mark.parametrize("args", [("vgg11", 10, 3), ("small_cnn", 1, 3), ("small_cnn", 10, 2)])
def test_bad_classifier_requests_are_one_line_errors(args):
    with pytest.raises(DiffbalanceError) as err:
        build_classifier(*args)
    assert "\n" not in str(err.value)


def test_an_image_smaller_than_a_classifier_takes_is_one_line():
    from diffbalance.classify.config import TrainConfig
    from diffbalance.classify.train import train_classifier
    from diffbalance.data.imageset import ImageSet

    tiny = ImageSet(torch.zeros(4, 3, 6, 6, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]), ("a", "b"))
    with pytest.raises(DiffbalanceError, match="resnet18 needs images of at least 8×8; these are 6×6") as err:
        train_classifier(tiny, TrainConfig(model="resnet18", epochs=1, batch_size=2), device="cpu", seed=0,
                         progress=False)
    assert "\n" not in str(err.value)

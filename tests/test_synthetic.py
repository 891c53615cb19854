"""synth32 generator: deterministic in its seed, balanced, train and test disjoint, loadable by name."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from benchmarks import synthetic
from benchmarks.synthetic import SynthSpec, generate

SMALL = SynthSpec(train=400, test=200)


def digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    assert digest(generate(SMALL)) == digest(generate(SMALL))
    assert digest(generate(SMALL)) != digest(generate(SynthSpec(seed=1, train=400, test=200)))


def test_shapes_and_balanced_classes() -> None:
    arrays = generate(SMALL)
    assert arrays["train_x"].shape == (400, 3, 32, 32) and arrays["train_x"].dtype == np.uint8
    assert arrays["test_x"].shape == (200, 3, 32, 32)
    assert np.bincount(arrays["train_y"]).tolist() == [40] * 10
    assert np.bincount(arrays["test_y"]).tolist() == [20] * 10
    assert arrays["train_x"].std() > 20  # not a constant image: shapes, background and noise are drawn


def test_no_test_image_in_train() -> None:
    arrays = generate(SMALL)
    train = {x.tobytes() for x in arrays["train_x"]}
    test = [x.tobytes() for x in arrays["test_x"]]
    assert len(set(test)) == len(test) and not train.intersection(test)


def test_split_size_not_a_multiple_of_classes_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple"):
        generate(SynthSpec(train=405, test=200))


@pytest.mark.parametrize("shape", range(len(synthetic.SHAPES)))
def test_signed_distance_inside_and_outside(shape: int) -> None:
    """Every primitive but the hollow ring contains its centre; none reaches a point two radii away."""
    centre = synthetic._signed_distance(shape, np.zeros(1), np.full(1, 0.1))
    far = synthetic._signed_distance(shape, np.full(1, 2.0), np.full(1, 2.0))
    assert far[0] > 0
    assert (centre[0] > 0) == (synthetic.SHAPES[shape] == "ring")


def test_bundle_is_cached_and_standardised(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(synthetic, "CACHE", tmp_path)
    first = synthetic.synth_bundle(SMALL)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = synthetic.synth_bundle(SMALL)
    assert first.fingerprint == again.fingerprint
    assert torch.equal(first.test.images, again.test.images)
    x = first.train.images
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4 and (x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    assert (first.num_classes, first.input_size, len(first.train), len(first.test)) == (10, 32, 400, 200)
    image, label = first.train[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10


@pytest.mark.parametrize("name", ["resnet20_proxy", "resnet18b_proxy", "resnet50b_proxy"])
def test_proxy_models_stride2_stem(name: str) -> None:
    """The proxy nets halve the resolution in their first layer and keep torchvision's module order."""
    from benchmarks.models import build_model

    model = build_model(name, 10, 32)
    first = next(m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert first is model.conv1 and first.stride == (2, 2)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.conv1(torch.randn(1, 3, 32, 32)).shape[-1] == 16

import pickle

import pytest
import torch
from bench_fixtures import write_cifar, write_imagenet

from benchmarks.data import DatasetError, load_data
from benchmarks.models import build_model, load_weights, model_names


def test_cifar_reads_real_batch_format(tmp_path):
    write_cifar(tmp_path, per_batch=20)
    bundle = load_data("cifar10", tmp_path)
    assert len(bundle.train) == 100 and len(bundle.test) == 20 and bundle.num_classes == 10
    img, label = bundle.test[3]
    assert img.shape == (3, 32, 32) and label == 3
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb"))
    pixel = raw["data"][3][0] / 255.0  # red channel, first pixel: normalised with the CIFAR mean/std
    assert img[0, 0, 0].item() == pytest.approx((pixel - 0.4914) / 0.2470, abs=1e-5)


def test_cifar_missing_and_malformed(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-batches-py/.*data_batch_1"):
        load_data("cifar10", tmp_path)
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="malformed") as err:
        load_data("cifar10", tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(DatasetError, match="--data DIR"):
        load_data("cifar10", None)


def test_imagenet_folders(tmp_path):
    write_imagenet(tmp_path, classes=3, per_class=2)
    bundle = load_data("imagenet", tmp_path)
    assert bundle.num_classes == 3 and len(bundle.train) == 6
    img, label = bundle.test[5]
    assert img.shape == (3, 224, 224) and label == 2
    with pytest.raises(DatasetError, match="val/<class>"):
        load_data("imagenet", tmp_path / "train")


def test_digits_proxy_split_is_fixed():
    a, b = load_data("digits16"), load_data("digits16", augment=False)
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == 454
    assert torch.equal(a.test.images, b.test.images) and a.fingerprint == b.fingerprint
    assert sorted(set(a.test.labels.tolist())) == list(range(10))


@pytest.mark.parametrize("name", model_names())
def test_models_build_and_roundtrip_weights(name, tmp_path):
    size = 224 if name in ("resnet18b", "resnet50b") else 16
    model = build_model(name, num_classes=10, input_size=size).eval()
    if size == 16:
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    other = build_model(name, num_classes=10, input_size=size)
    load_weights(other, path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
    )


def test_resnet20_matches_paper_size():
    model = build_model("resnet20", 10, 32)
    assert sum(p.numel() for p in model.parameters()) == 269_722  # He et al.: 0.27M


def test_wrong_weights_file_is_one_line_error(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(build_model("resnet20_narrow", 10, 16).state_dict(), path)
    with pytest.raises(ValueError, match="does not match"):
        load_weights(build_model("resnet20", 10, 32), path)


def test_digits_fingerprint_does_not_depend_on_thread_count():
    """The float-model cache is keyed by it: 1 and 2 threads must see the same data."""
    before = torch.get_num_threads()
    try:
        prints = set()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            prints.add(load_data("digits16-noise30").fingerprint)
    finally:
        torch.set_num_threads(before)
    assert len(prints) == 1


def test_noisy_digits_are_fixed_and_harder():
    clean, noisy, again = load_data("digits16"), load_data("digits16-noise30"), load_data("digits16-noise30")
    assert torch.equal(noisy.test.images, again.test.images) and noisy.fingerprint == again.fingerprint
    assert noisy.fingerprint != clean.fingerprint
    assert torch.equal(noisy.test.labels, clean.test.labels)
    with pytest.raises(DatasetError, match="digits<size>"):
        load_data("mnist")

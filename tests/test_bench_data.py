import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
import torchvision
from bench_fixtures import write_cifar, write_imagenet
from PIL import Image
from torchvision import transforms

from benchmarks.data import (
    DatasetError,
    EpochSampler,
    JpegBytes,
    ScaleAugment,
    _is_cmyk_jpeg,
    cifar10_hou,
    global_contrast_normalize,
    imagenet,
    load_data,
    loader_workers,
    make_loader,
    zca_fit,
)
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


# ---------------------------------------------------------------- ImageNet augmentation (issue 16)
def test_scale_augment_draws_follow_he_et_al():
    """Shorter side uniform over the integers 256..480 (both ends), aspect kept, crop inside the image."""
    torch.manual_seed(0)
    aug = ScaleAugment()
    shorts = []
    for height, width in [(375, 500), (500, 375)] * 3000:
        new_h, new_w, top, left = aug.params(height, width)
        short, long = min(new_h, new_w), max(new_h, new_w)
        assert long == int(short * 500 / 375) and (new_h < new_w) == (height < width)
        assert 0 <= top <= new_h - 224 and 0 <= left <= new_w - 224
        shorts.append(short)
    counts = np.bincount(shorts, minlength=481)[256:]
    assert min(shorts) == 256 and max(shorts) == 480 and len(counts) == 225
    expected = len(shorts) / 225
    assert scipy.stats.chisquare(counts, [expected] * 225).pvalue > 1e-3


@pytest.mark.parametrize("pick", ["low", "high"])
def test_scale_augment_output_is_pil_resize_then_crop(monkeypatch, pick):
    """With the draws pinned (lowest or highest value each), the crop is PIL's bilinear resize of the
    whole image, then the crop (up to the rounding of resampling only the box: one grey level, rarely)."""
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 353, 3), dtype=np.uint8))
    real = torch.randint
    monkeypatch.setattr(
        torch, "randint", lambda low, high, size: torch.tensor(low if pick == "low" else high - 1)
    )
    out = ScaleAugment()(img)
    monkeypatch.setattr(torch, "randint", real)
    short = 256 if pick == "low" else 480
    new_w = int(short * 353 / 300)
    top, left = (0, 0) if pick == "low" else (short - 224, new_w - 224)
    ref = img.resize((new_w, short), Image.BILINEAR).crop((left, top, left + 224, top + 224))
    diff = np.abs(np.asarray(out, dtype=int) - np.asarray(ref, dtype=int))
    assert out.size == (224, 224) and diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_imagenet_augment_options(tmp_path):
    write_imagenet(tmp_path, classes=2, per_class=1)
    crop_of = {aug: imagenet(tmp_path, aug).train.geometry.transforms[0] for aug in (True, "he", "rrc")}
    assert isinstance(crop_of[True], ScaleAugment) and isinstance(crop_of["he"], ScaleAugment)
    rrc = crop_of["rrc"]
    assert isinstance(rrc, transforms.RandomResizedCrop) and rrc.size == (224, 224)
    assert rrc.scale == (0.08, 1.0) and rrc.ratio == pytest.approx((3 / 4, 4 / 3))
    plain = imagenet(tmp_path, False).train.geometry.transforms
    assert [type(t) for t in plain] == [transforms.Resize, transforms.CenterCrop]
    with pytest.raises(ValueError, match="rrc"):
        imagenet(tmp_path, "inception")


# ---------------------------------------------------------------- Hou & Kwok's CIFAR-10 (Table 2)
def pylearn2_gcn(x: np.ndarray, scale: float = 55.0) -> np.ndarray:
    """pylearn2.datasets.cifar10.CIFAR10(gcn=55.): X - row mean, / row L2 norm, * gcn."""
    x = (x.T - x.mean(axis=1)).T
    x = (x.T / np.sqrt(np.square(x).sum(axis=1))).T
    return x * scale


def pylearn2_zca(x: np.ndarray, filter_bias: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """pylearn2.datasets.preprocessing.ZCA.fit, with the inverse square root taken by scipy's sqrtm."""
    mean = x.mean(axis=0)
    covariance = (x - mean).T @ (x - mean) / x.shape[0] + filter_bias * np.eye(x.shape[1])
    return mean, np.linalg.inv(scipy.linalg.sqrtm(covariance).real)


def test_gcn_and_zca_match_pylearn2():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 48)).astype(np.float64) * rng.uniform(0.2, 1.0, (60, 1))
    gcn = global_contrast_normalize(x)
    assert np.allclose(gcn, pylearn2_gcn(x), atol=1e-10)
    mean, whiten = zca_fit(gcn)
    ref_mean, ref_whiten = pylearn2_zca(gcn)
    assert np.allclose(mean, ref_mean) and np.allclose(whiten, ref_whiten, atol=1e-8)
    flat = global_contrast_normalize(np.full((2, 48), 7.0))  # constant images: centred, not divided by 0
    assert np.array_equal(flat, np.zeros((2, 48)))


@pytest.mark.slow
def test_cifar10_hou_bundle(tmp_path):
    """45k/5k of the training batches in order (9:1 here), whitened with the ZCA fitted on all of them."""
    write_cifar(tmp_path, per_batch=4)
    bundle = cifar10_hou(tmp_path)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (18, 2, 4)
    assert bundle.train.pad == 0 and bundle.fingerprint != load_data("cifar10", tmp_path).fingerprint
    folder = tmp_path / "cifar-10-batches-py"
    batches = [pickle.load(open(folder / f"data_batch_{i}", "rb")) for i in range(1, 6)]
    rows = pylearn2_gcn(np.concatenate([b["data"] for b in batches]).astype(np.float64))
    labels = np.concatenate([b["labels"] for b in batches])
    test = pickle.load(open(folder / "test_batch", "rb"))
    # ZCA through the SVD of the 20 centred rows (cheap for 20 rows of 3072): cov + 0.1 I has the right
    # singular vectors V with eigenvalues s^2/n + 0.1 and 0.1 on their complement
    mean = rows.mean(axis=0)
    _, s, vt = np.linalg.svd(rows - mean, full_matrices=False)
    scale = 1 / np.sqrt(s**2 / len(rows) + 0.1)

    def whiten(x: np.ndarray) -> np.ndarray:
        x = x - mean
        inside = x @ vt.T
        return ((inside * scale) @ vt + (x - inside @ vt) / np.sqrt(0.1)).reshape(-1, 3, 32, 32)

    train_ref, test_ref = whiten(rows), whiten(pylearn2_gcn(test["data"].astype(np.float64)))
    assert np.allclose(bundle.train.images.numpy(), train_ref[:18], atol=1e-4)
    assert np.allclose(bundle.val.images.numpy(), train_ref[18:], atol=1e-4)
    assert np.allclose(bundle.test.images.numpy(), test_ref, atol=1e-4)
    assert (
        bundle.val.labels.tolist() == labels[18:].tolist() and bundle.test.labels.tolist() == test["labels"]
    )


# ---------------------------------------------------------------- the loader (issue 15)
def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    fresh = EpochSampler(10, shuffle=True, seed=3, epoch=2)
    resumed = EpochSampler(10, shuffle=True, seed=3)
    resumed.set_epoch(2)
    assert list(fresh) == list(resumed)
    assert sorted(i for i, _ in fresh) == list(range(10))
    resumed.set_epoch(3)
    assert list(fresh) != list(resumed)
    # the item seed belongs to the item and the epoch, not to its position or rank
    ranks = [list(EpochSampler(10, shuffle=True, seed=3, epoch=2, world=3, rank=r)) for r in range(3)]
    assert all(len(r) == 4 for r in ranks)
    merged = [pair for step in zip(*ranks, strict=True) for pair in step]
    assert merged[:10] == list(fresh) and merged[10:] == list(fresh)[:2]  # padded by wrapping round
    assert list(EpochSampler(4, shuffle=False, seed=3, world=2, rank=1)) == [(i, 0) for i in range(4)]
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(4, shuffle=True, seed=0, world=2, rank=2)


def test_make_loader_settings(tmp_path, monkeypatch):
    write_imagenet(tmp_path, classes=2, per_class=3)
    bundle = load_data("imagenet", tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(24)))
    assert loader_workers(bundle.train) == 24 // max(1, torch.cuda.device_count())
    assert loader_workers(load_data("digits16").train) == 0
    cpu = torch.device("cpu")
    loader = make_loader(bundle.train, 4, train=True, seed=0, epoch=0, device=cpu, world=2, workers=2)
    assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 4
    assert loader.batch_size == 2 and loader.drop_last and not loader.pin_memory
    tensors = make_loader(load_data("digits16").test, 64, train=False, seed=0, epoch=0, device=cpu)
    assert tensors.num_workers == 0 and not tensors.drop_last and len(tensors.dataset) == 454
    with pytest.raises(ValueError, match="gpu_decode"):
        make_loader(load_data("digits16").test, 8, train=False, seed=0, epoch=0, device=cpu, gpu_decode=True)


def batches(loader, epochs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        out += list(loader)
    return out


def test_loader_batches_do_not_depend_on_workers_or_resume(tmp_path):
    """Same crops with 0 or 2 workers, and a run resumed at epoch 1 sees what the whole run saw."""
    write_imagenet(tmp_path, classes=2, per_class=3, size=24)
    train = load_data("imagenet", tmp_path).train
    cpu = torch.device("cpu")
    whole = batches(make_loader(train, 3, train=True, seed=5, epoch=0, device=cpu, workers=2), [0, 1])
    resumed = batches(make_loader(train, 3, train=True, seed=5, epoch=1, device=cpu, workers=0), [1])
    assert len(whole) == 4 and all(x.shape == (3, 3, 224, 224) for x, _ in whole)
    for (x, y), (x2, y2) in zip(whole[2:], resumed, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(whole[0][0], whole[2][0])
    state = torch.get_rng_state()
    batches(make_loader(train, 3, train=True, seed=5, epoch=0, device=cpu, workers=0), [0])
    assert torch.equal(torch.get_rng_state(), state)  # the training's own draws (NATS noise) are untouched


def test_decode_path_applies_the_same_augmentation(tmp_path):
    """decode_jpeg + tensor geometry (the GPU path, run on CPU) gives the CPU loader's crops: the two differ
    only by the JPEG decoder and the resize kernels, about one grey level."""
    write_imagenet(tmp_path, classes=2, per_class=2, size=60)
    train = load_data("imagenet", tmp_path).train
    cpu = torch.device("cpu")
    pil = batches(make_loader(train, 2, train=True, seed=1, epoch=0, device=cpu, workers=0), [0, 1])
    raw = make_loader(train, 2, train=True, seed=1, epoch=0, device=cpu, workers=0, gpu_decode=True)
    decoded = batches(raw, [0, 1])
    for (x, y), (x2, y2) in zip(pil, decoded, strict=True):
        assert torch.equal(y, y2) and x2.dtype == torch.float32
        grey = 1 / 255 / 0.224  # one grey level after normalisation (the largest std is 0.229)
        assert (x - x2).abs().mean() < 0.5 * grey and (x - x2).abs().max() < 2 * grey


def test_jpeg_bytes_reencodes_png_and_cmyk(tmp_path):
    write_imagenet(tmp_path, classes=1, per_class=1)
    folder = tmp_path / "train" / "n00000000"
    ramp = np.linspace(0, 255, 30)[None, :, None] * np.ones((20, 1, 3)) * np.array([1.0, 0.5, 0.2])
    pixels = ramp.astype(np.uint8)  # smooth, so that JPEG's loss stays small
    Image.fromarray(pixels).save(folder / "png.JPEG", format="PNG")
    Image.fromarray(pixels).convert("CMYK").save(folder / "cmyk.JPEG", format="JPEG")
    train = load_data("imagenet", tmp_path).train
    items = JpegBytes(train)
    assert [Path(p).name for p, _ in train.samples] == ["cmyk.JPEG", "png.JPEG", "train_0_0.JPEG"]
    assert _is_cmyk_jpeg((folder / "cmyk.JPEG").read_bytes())
    assert not _is_cmyk_jpeg((folder / "train_0_0.JPEG").read_bytes())
    for index in range(3):
        data, label, _ = items[(index, 0)]
        image = torchvision.io.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        assert data[:2] == b"\xff\xd8" and label == 0 and image.shape[0] == 3
    png = torchvision.io.decode_jpeg(torch.frombuffer(bytearray(items[(1, 0)][0]), dtype=torch.uint8))
    assert (png.permute(1, 2, 0).float() - torch.from_numpy(pixels).float()).abs().mean() < 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_decode_matches_cpu_decode(tmp_path):
    """On smooth, photograph-like JPEGs (`bench.write_jpegs`). Measured on an H200 (2026-12-04): on JPEGs of
    uniform pixel noise the two paths differ by 9 grey levels on average (likely cause: libjpeg's smoothing
    chroma upsampling and nvJPEG's differ most where colour changes every pixel); this version of the test
    has not yet run on a GPU."""
    from benchmarks.bench import write_jpegs

    write_jpegs(tmp_path, 8, classes=2)
    train = load_data("imagenet", tmp_path).train
    runs = {}
    cuda_state = torch.cuda.get_rng_state()
    for device in ("cpu", "cuda"):
        loader = make_loader(
            train, 4, train=True, seed=2, epoch=0, device=torch.device(device), gpu_decode=True
        )
        runs[device] = batches(loader, [0])
    assert torch.equal(torch.cuda.get_rng_state(), cuda_state)  # NATS draws on the GPU are untouched
    for (x, y), (xg, yg) in zip(runs["cpu"], runs["cuda"], strict=True):
        assert xg.is_cuda and torch.equal(y, yg.cpu())
        assert (x - xg.cpu()).abs().mean() < 1 / 255 / 0.224  # a grey level: decoders and resizes round apart

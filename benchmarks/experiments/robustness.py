"""Noise robustness: accuracy vs test-time weight noise (0..30%), ADC bits, stuck devices, crossbar tile
size, IR drop (line resistance x tile size) and input DAC bits, one curve per trained model.

Two families of trained models at 3, 4 and 8 levels, each evaluated on the same sweep (no retraining):
- Lloyd trained at several NATS deltas, and with HA-SGD (L noise draws per step) both at equal steps
  (L x the compute) and at equal compute (epochs / L);
- every quantizer that supports the level count, trained at COMPARE_NOISE.
The ADC sweep digitises every analog layer's output (range calibrated on training batches) at ADC_NOISE;
the stuck sweep sticks a fraction of the devices at g_min / g_max (cacim_core.device.StuckNoise), per chip.

The tile sweep maps the trained model onto square crossbar tiles of TILES rows and columns
(`cacim_core.device.set_tile`): each tile has its own conductance scale, so its noise is delta * max|W_q| of
the tile rather than of the layer, and with an ADC each tile digitises its own partial sums (own range). The
levels stay per layer, so tiling is a property of the chip, not of the trained model: an evaluation-time
axis, measured at TILE_NOISE alone and at ADC_NOISE with TILE_ADC_BITS. The whole layer (no tiling) is the
untiled point of the same condition, which the noise and ADC sweeps already hold. Models are trained with
whole-layer NATS; tile-aware training would be a cell option (`("tile", (64, 64))`), not done here.
Which layers get more than one tile ((out, in * k * k) matrix; out <= 64 in both nets, so only the column
blocks split):
- proxy/smoke resnet20_narrow (8/16/32 wide): 64 splits every layer but the stem (27) and the classifier
  (32): 72 -> 2 tiles, 144 -> 3, 288 -> 5; 128 splits the 144- and 288-input layers (2 and 3 tiles); 256
  only the 288-input convs (2 tiles: 5 of the 6 layer3 convs).
- paper ResNet-20 (16/32/64 wide): 64 splits every conv but the stem (144 -> 3, 288 -> 5, 576 -> 9);
  128: 144 -> 2, 288 -> 3, 576 -> 5; 256: the 288- and 576-input convs (2 and 3 tiles).

The IR-drop axis reads each tile of the tile sweep (at TILE_NOISE) through resistive lines of IR_WIRES ohm
per cell (`cacim_core.circuit.IRDrop`, first-order model: within 0.2 * drop^2 of the exact nodal solve,
tests/test_circuit.py); r = 0 is the tile axis's own point. Each proxy tile is at most 256 rows (inputs)
x 32 columns (outputs; 64 for the paper ResNet-20). The DAC axis digitises every analog layer's input with
DAC_BITS bits (range calibrated with the ADCs on training batches), at ADC_NOISE with a DAC_ADC_BITS-bit
ADC, whose point without a DAC is the ADC sweep's.
"""

from dataclasses import replace

from benchmarks.experiments import Cell, Condition, Recipe, Row, Schedule, Setup, expand, register_experiment
from benchmarks.experiments.table1 import SETUPS as TABLE1

LEVELS = (3, 4, 8)
# 0..10% as asked, then on to where the proxy models break (the digits proxy barely moves below 10%)
TEST_NOISES = (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.10, 0.15, 0.20, 0.30)
ADC_BITS = (2, 3, 4, 5, 6, 8)
ADC_NOISE = 0.02
TRAIN_NOISES = (0.0, 0.02, 0.05, 0.10)
COMPARE_NOISE = 0.02
HA_SGD = (4, 0.05)  # (draws per step, training delta)
QUANTIZERS = {
    3: ("lloyd", "uniform", "log2", "ttq", "twn", "hefan", "apot", "lsq", "lglsq"),
    4: ("lloyd", "uniform", "log2", "lqnet", "apot", "lsq", "lglsq"),
    8: ("lloyd", "uniform", "log2", "lqnet", "apot", "lsq", "lglsq"),
}
STUCK = (0.001, 0.005, 0.01, 0.02, 0.05)  # fraction of devices stuck, half at g_min and half at g_max
TILES = (64, 128, 256)  # square crossbar tiles; the whole layer is the untiled point of the same condition
TILE_NOISE = 0.10  # the digits proxy barely moves below; a TEST_NOISES point (the whole layer)
TILE_ADC_BITS = 4  # at ADC_NOISE; an ADC_BITS point (the whole layer)
IR_WIRES = (0.15, 0.35, 1.0)  # ohm per cell: aihwkit's two defaults (ir_drop_rs, ir_drop_g_ratio) and 1
DAC_BITS = (2, 3, 4, 6)
DAC_ADC_BITS = 8  # an ADC_BITS point: the DAC axis's "no DAC" reference


def irdrop(noise: float, r: float) -> str:
    """The noise spec of a tile read through lines of r ohm per cell after Gaussian programming noise."""
    return f"gaussian:delta={noise:g}+irdrop:r={r:g}"


def dac(noise: float, bits: int) -> str:
    """The noise spec of Gaussian programming noise with a b-bit input DAC on every analog layer."""
    return f"gaussian:delta={noise:g}+dac:bits={bits}"


SWEEP = (
    tuple(Condition(delta) for delta in TEST_NOISES)
    + tuple(Condition(ADC_NOISE, bits) for bits in ADC_BITS)
    + tuple(Condition(f"stuck:gmin={f / 2:g},gmax={f / 2:g}") for f in STUCK)
    + tuple(Condition(TILE_NOISE, tile=(t, t)) for t in TILES)
    + tuple(Condition(ADC_NOISE, TILE_ADC_BITS, (t, t)) for t in TILES)
    + tuple(Condition(irdrop(TILE_NOISE, r), tile=(t, t)) for t in TILES for r in IR_WIRES)
    + tuple(Condition(dac(ADC_NOISE, b), DAC_ADC_BITS) for b in DAC_BITS)
)

SETUPS = {
    # Paper scale: ResNet-20 on CIFAR-10 with Table 1's recipe (needs DATA= and a GPU for the whole grid).
    "paper": TABLE1["paper"],
    # Proxy: the narrow ResNet-20 on 16x16 digits (not Table 1's synth32 proxy: its float models differ),
    # Table 1's proxy float recipe; its own fine-tuning (4 epochs at lr 0.02, Table 1 proxy: 2 at 0.01).
    "proxy": Setup(
        {"resnet20": "resnet20_narrow"},
        "digits16",
        Recipe(
            epochs=4,
            batch_size=64,
            lr=0.02,
            weight_decay=1e-4,
            schedule=Schedule(milestones=((3, 0.2),)),
            refit_threshold=1.5,
        ),
        fp_recipe=TABLE1["proxy"].fp_recipe,
        trials=5,
    ),
    "smoke": Setup(
        {"resnet20": "resnet20_narrow"},
        "digits8",
        Recipe(epochs=2, batch_size=64, lr=0.02, refit_threshold=1.5),
        fp_recipe=Recipe(epochs=1, batch_size=64, lr=0.1),
        trials=2,
        max_batches=2,
    ),
}


def ha_sgd(cell: Cell, samples: int, equal_compute: bool) -> Cell:
    epochs = max(1, cell.recipe.epochs // samples) if equal_compute else cell.recipe.epochs
    return replace(cell, recipe=replace(cell.recipe, noise_samples=samples, epochs=epochs))


@register_experiment("robustness")
def cells(scale: str) -> list[Cell]:
    setup = SETUPS[scale]
    samples, ha_noise = HA_SGD
    if scale == "smoke":  # one model per family, a short sweep: exercises every code path in seconds
        rows = [Row("lloyd", 3, noise=COMPARE_NOISE), Row("lglsq", 3, noise=COMPARE_NOISE)]
        sweep = (
            Condition(0.0),
            Condition(0.05),
            Condition(ADC_NOISE, 3),
            Condition("stuck:gmin=0.01,gmax=0.01"),
            Condition(0.05, tile=(64, 64)),
            Condition(ADC_NOISE, 3, (64, 64)),
            Condition(irdrop(0.05, 1.0), tile=(64, 64)),
            Condition(dac(ADC_NOISE, 3), 3),
        )
        samples, ha_noise, levels = 2, COMPARE_NOISE, (3,)
    else:
        noise_rows = [Row("lloyd", v, noise=n) for v in LEVELS for n in TRAIN_NOISES]
        method_rows = [Row(m, v, noise=COMPARE_NOISE) for v in LEVELS for m in QUANTIZERS[v] if m != "lloyd"]
        rows, sweep, levels = noise_rows + method_rows, SWEEP, LEVELS
    base = [replace(c, trials=setup.trials, sweep=sweep) for c in expand("robustness", setup, rows)]
    ha_rows = [Row("lloyd", v, noise=ha_noise) for v in levels]
    lloyd = {c.levels: c for c in expand("robustness", setup, ha_rows)}
    extra = [
        replace(ha_sgd(lloyd[v], samples, equal_compute), trials=setup.trials, sweep=sweep)
        for v in levels
        for equal_compute in (False, True)
    ]
    return base + extra

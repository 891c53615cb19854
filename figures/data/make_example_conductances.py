"""Write `example_conductances.csv`: GENERATED stand-in for a measured conductance file (not a measurement).

It uses only the statistics the paper states in section 4.4: the four differential conductances of its
worked example (4-level ResNet-18b, first conv) and a measured std of 0.32 uS. Run
`python -m figures.data.make_example_conductances` to regenerate it byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.results import atomic_write

TARGETS_US = (-10.36, -0.57, 4.52, 15.75)  # G = G+ - G- of the paper's worked example (section 4.4)
STD_US = 0.32  # "the standard deviation of the measured G is 0.32 uS"
SAMPLES_PER_LEVEL = 250
SEED = 0
OUT = Path(__file__).with_name("example_conductances.csv")


def main() -> None:
    rng = np.random.default_rng(SEED)
    columns = [target + STD_US * rng.standard_normal(SAMPLES_PER_LEVEL) for target in TARGETS_US]
    lines = [
        "# GENERATED, NOT MEASURED: Gaussian samples with the paper's stated statistics (section 4.4:",
        f"# targets {', '.join(f'{t:g}' for t in TARGETS_US)} uS, std {STD_US} uS), seed {SEED}, "
        f"{SAMPLES_PER_LEVEL} per level.",
        "# Written by figures/data/make_example_conductances.py. Replace with real device measurements:",
        "# one column of measured differential conductance G = G+ - G- (uS) per target level.",
        ",".join(f"{t:g}" for t in TARGETS_US),
        *(",".join(f"{column[i]:.3f}" for column in columns) for i in range(SAMPLES_PER_LEVEL)),
    ]
    atomic_write(OUT, "\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

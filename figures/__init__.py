"""The paper's figures, drawn from the results store (never trains): `python -m figures [fig2|fig3|fig4|all]`.

- fig2: one layer quantized by uniform, log2 and Lloyd at 8 levels (`--checkpoint`, default the runner's
  cached float ResNet-18b).
- fig3: ours with noise vs others without (records of table3/delta/fig3 and table4; quoted bars hatched).
- fig4: (a) a 4-level layer on conductances, simulated vs the measured model (`--conductances CSV`);
  (b) records of experiment fig4b.
Output: `figures/out/<scale>/<name>.png` and `.pdf`. Missing inputs are listed with the `make` target
producing them.
"""

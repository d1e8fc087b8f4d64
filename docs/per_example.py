"""Recompute a Table 2 cell and the best-BNN margin from per_example.npz (docs/PER_EXAMPLE.md).
Usage: python docs/per_example.py reports/<profile>   (numpy only)"""
import json, sys
import numpy as np
d = sys.argv[1]
z, ix = np.load(f"{d}/per_example.npz"), json.load(open(f"{d}/per_example.json"))
acc = 100.0 * z["correct"] / z["runs"][:, None, None]       # [model, split, example]: % of runs correct
sets = acc[:, 2:].mean(axis=2)                              # [model, set]: Table 2's cells
row = {e["name"]: i for i, e in enumerate(ix["models"])}
print("cell", ix["sets"][0], "bnn/rho=-3", sets[row["bnn/rho=-3"], 0])
best = {g: max((i for i, e in enumerate(ix["models"]) if e["group"] == g), key=lambda i: sets[i].mean()) for g in ("bnn", "deterministic")}
diff = (acc[best["bnn"], 2:] - acc[best["deterministic"], 2:]).mean(axis=0)   # per test image, over the 12 sets
rng = np.random.default_rng(0)
boot = np.array([diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(2000)])
print("margin", diff.mean(), "paired bootstrap 95% CI", *np.percentile(boot, [2.5, 97.5]))

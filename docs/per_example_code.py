"""Recompute a code-protocol Table 2 cell and the best-BNN margin from per_example.npz (docs/PER_EXAMPLE.md).
Usage: python docs/per_example_code.py reports/paper-code   (numpy only)"""
import json, sys
import numpy as np
d = sys.argv[1]
z, ix, r = np.load(f"{d}/per_example.npz"), json.load(open(f"{d}/per_example.json")), json.load(open(f"{d}/results.json"))
cols = {(s["set"], s["multiplier"]): slice(s["start"], s["end"]) for s in ix["splits"]}   # (set, m) -> its columns
acc = lambda m, k, g: 100.0 * z["correct"][m, cols[(k, r["multipliers"][g])]] / z["runs"][m]   # Table 2: a group's m
row = {e["name"]: i for i, e in enumerate(ix["models"])}
print("cell", ix["sets"][0], "BNN rho_init=-3", acc(row["BNN rho_init=-3"], 0, "bnn").mean())
avg = lambda m, g: np.mean([acc(m, k, g).mean() for k in range(len(ix["sets"]))])
best = {g: max((i for i, e in enumerate(ix["models"]) if e["group"] == g), key=lambda i: avg(i, g)) for g in ("bnn", "det")}
diffs = [acc(best["bnn"], k, "bnn") - acc(best["det"], k, "det") for k in range(len(ix["sets"]))]   # paired: same kept images
rng = np.random.default_rng(0)
boot = [np.mean([x[rng.integers(0, x.size, x.size)].mean() for x in diffs]) for _ in range(1000)]
print("margin", np.mean([x.mean() for x in diffs]), "bootstrap within sets 95% CI", *np.percentile(boot, [2.5, 97.5]))

"""Recompute the first primary verdict of a report from its committed per-example files.

    .venv/bin/python docs/verdict.py reports/paper

The claim: best BNN - best deterministic net, Table 2's 12-set averages (the paper:
+15.4 points). The procedure is the report's (src/verdicts/): a hierarchical paired
percentile bootstrap -- training seeds resampled where per_example_strength.npz (its
point m = 1) or per_example_seeds.npz holds K > 1 of them (their level widened by sqrt(K/(K-1)) * t(K-1)/z), then the test images, the
same indices for every model and set -- with the best BNN and the best deterministic net
chosen again inside every resample, at the Bonferroni level of the primary family (4
claims at family-wise 95%: each CI at 98.75%). Weight draws enter through each image's
fraction of correct draws. numpy only; its generator is not the report's, so the CI ends
agree with verdicts.json to within Monte Carlo error, the estimate exactly.
"""

import json
import sys
from pathlib import Path

import numpy as np

PAPER = 15.4
LEVEL = 1 - 0.05 / 4
RESAMPLES = 4000
T975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def scores_of(folder):
    """[K, models, n] fractions of correct runs over the 12 sets, and the model names."""
    study = folder / "per_example_strength.npz"
    if study.exists():
        # The strength study's point m = 1 is the primary reading (Table 2's sets) at K seeds.
        index = json.loads((folder / "per_example_strength.json").read_text())
        p = [q["name"] for q in index["points"]].index("m=1")
        correct = np.load(study)["correct"][p].astype(np.float64)
        per_run = 1.0 / (index["sets"] * np.array(index["draws"], dtype=np.float64))
        return correct * per_run[None, :, None], index["models"]
    seeds = folder / "per_example_seeds.npz"
    if seeds.exists():
        index = json.loads((folder / "per_example_seeds.json").read_text())
        correct = np.load(seeds)["correct"].astype(np.float64)
        per_run = 1.0 / (index["sets"] * np.array(index["draws"], dtype=np.float64))
        return correct * per_run[None, :, None], index["models"]
    index = json.loads((folder / "per_example.json").read_text())
    z = np.load(folder / "per_example.npz")
    sets = [i for i, s in enumerate(index["splits"]) if s not in ("validation", "test")]
    runs = np.array([m["runs"] for m in index["models"]], dtype=np.float64)
    frac = z["correct"][:, sets, :].astype(np.float64).mean(axis=1) / runs[:, None]
    return frac[None], [m["name"] for m in index["models"]]


def margin(acc, bnns, dets):
    """Best BNN - best deterministic net, per row of acc [.., models] (percent)."""
    return acc[..., bnns].max(axis=-1) - acc[..., dets].max(axis=-1)


def main(folder):
    folder = Path(folder)
    s, names = scores_of(folder)
    k, _, n = s.shape
    bnns = [i for i, m in enumerate(names) if m.startswith("bnn/")]
    dets = [i for i, m in enumerate(names) if m.startswith("det/")]
    estimate = float(margin(100 * s.mean(axis=(0, 2)), bnns, dets))
    inflation = 1.0 if k < 2 else np.sqrt(k / (k - 1)) * T975[k] / 1.959964
    rng = np.random.default_rng(20201218)
    reps = []
    for chunk in range(0, RESAMPLES, 250):
        b = min(250, RESAMPLES - chunk)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)  # [b, n]
        dots = np.einsum("bn,kmn->bkm", w, s) / n  # [b, K, models]
        images_only = 100 * dots.mean(axis=1)
        if k > 1:
            picks = rng.integers(0, k, size=(b, k))
            both = 100 * np.take_along_axis(dots, picks[:, :, None], axis=1).mean(axis=1)
        else:
            both = images_only
        at_images = margin(images_only, bnns, dets)
        reps.append(at_images + inflation * (margin(both, bnns, dets) - at_images))
    reps = np.sort(np.concatenate(reps))
    tail = (1 - LEVEL) / 2
    lo = reps[int(np.floor(tail * RESAMPLES + 1e-9))]
    hi = reps[int(np.ceil((1 - tail) * RESAMPLES - 1e-9)) - 1]
    if hi < 0:
        verdict = "reversed"
    elif lo <= 0:
        verdict = "not settled"
    elif hi >= PAPER:
        verdict = "reproduced"
    else:
        verdict = "smaller"
    print(f"best BNN - best deterministic net: {estimate:+.4f} [{lo:+.4f}, {hi:+.4f}] "
          f"({100 * LEVEL:.2f}% simultaneous, K = {k} seeds, n = {n} images): {verdict}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "reports/paper")

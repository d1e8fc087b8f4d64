#!/usr/bin/env bash
# The main output, setup included: verifies the data, reproduces Tables 1–4 under the
# paper's text (with the white-box stage and the attack-strength axis) and under the
# authors' code protocol (as written and trained to accuracy), and
# renders reports/<profile>/README.md (with the section comparing the two) and
# reports/<profile>-code/README.md; beside the paper profile, the seeds profile (5
# training seeds, reusing runs/paper/) into reports/seeds/; then the same text protocol
# on Fashion-MNIST
# (FASHION_PROFILE; default short beside the paper profile, else PROFILE) into
# reports/fashion-mnist-<profile>/.
# PROFILE=quick for a short run; every run resumes from runs/<its folder>/ if
# interrupted. Extra arguments go to the MNIST `reproduce` calls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
cargo build --release --quiet
profile="${PROFILE:-paper}"
./target/release/bayes-robust data check
./target/release/bayes-robust --dataset fashion-mnist data check
./target/release/bayes-robust reproduce --profile "$profile" --whitebox --strength --per-example "$@"
# The paper's protocol with 5 training seeds: shares runs/paper/ and trains seeds 3–4,
# with the strength axis's comparisons across them (reusing the paper run's strength cache);
# and the strength axis on the short budget with 5 training seeds (reports/short/, the
# committed one).
if [ "$profile" = paper ]; then
  ./target/release/bayes-robust reproduce --profile seeds --strength --per-example "$@"
  ./target/release/bayes-robust reproduce --profile short --strength --per-example --train-seeds 5 "$@"
fi
# Also re-renders reports/<profile>/README.md, whose margin section reads these results.
./target/release/bayes-robust reproduce --profile "$profile" --protocol code --per-example "$@"
# The same protocol with every model trained as far as the authors' were (issue 20).
./target/release/bayes-robust reproduce --profile "$profile" --protocol code --code-budget trained --per-example "$@"
# Fashion-MNIST's default: the short profile beside the paper one, else the same profile.
if [ "$profile" = paper ]; then fashion_default=short; else fashion_default=$profile; fi
./target/release/bayes-robust --dataset fashion-mnist reproduce --profile "${FASHION_PROFILE:-$fashion_default}" --whitebox --per-example

#!/usr/bin/env bash
# The main output, setup included: verifies the data, then reproduces Tables 1–4 and
# writes reports/<profile>/results.json. PROFILE=quick for a few-minute run; the paper
# profile resumes from runs/paper/ if interrupted. Extra arguments go to `reproduce`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
cargo build --release --quiet
./target/release/bayes-robust data check
./target/release/bayes-robust reproduce --profile "${PROFILE:-paper}" "$@"

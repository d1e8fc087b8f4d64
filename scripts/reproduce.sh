#!/usr/bin/env bash
# The main output, setup included. For now: verify and summarise the real MNIST data.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
cargo run --release --quiet -- data check "$@"

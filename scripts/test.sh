#!/usr/bin/env bash
# The whole test suite, setup included: `scripts/test.sh` (extra arguments go to cargo test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
cargo test --all-targets "$@"

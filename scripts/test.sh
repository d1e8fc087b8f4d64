#!/usr/bin/env bash
# The whole test suite, setup included: `scripts/test.sh` (extra arguments go to cargo test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# Where setup could install Slurm as root, the real-cluster test must run, not skip.
if [ "$(id -u)" = 0 ] && command -v slurmctld >/dev/null && command -v munged >/dev/null; then
    export BAYES_ROBUST_REQUIRE_SLURM=1
fi
cargo test --all-targets "$@"

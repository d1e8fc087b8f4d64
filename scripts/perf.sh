#!/usr/bin/env bash
# Side-by-side speed figures (docs/PERFORMANCE.md): the PyTorch anchors of
# ../shared/perf-anchors and our criterion benches, one after the other on the same
# machine, 2 threads each. Run it on a quiet machine; logs go to target/perf/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
anchors="${ANCHORS:-../shared/perf-anchors}"
.venv/bin/pip install --quiet --no-deps bayesian-torch torchattacks numpy scipy tqdm requests
mkdir -p target/perf
export MNIST_DIR=data/mnist THREADS=2 CKPT_DIR=target/perf/ckpt
# Each anchor runs right before the benches it is compared with, so that every ratio
# is taken a few minutes apart at most.
anchor() {
    echo "== $1" | tee "target/perf/$1.log"
    .venv/bin/python "$anchors/$1.py" 2>&1 | tee -a "target/perf/$1.log"
}
bench() {
    echo "== bench $1" | tee "target/perf/bench_$1.log"
    cargo bench --bench "$1" 2>&1 | grep -v '^$' | tee -a "target/perf/bench_$1.log"
}
cargo bench --no-run --quiet
anchor w0_sgemm
anchor w1_train
bench train_step
bench grid
anchor w2_infer
bench inference
anchor w3_attack
bench attack_step
bench prune

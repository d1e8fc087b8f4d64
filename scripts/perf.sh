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
for w in w0_sgemm w1_train w2_infer w3_attack; do
    echo "== $w" | tee "target/perf/$w.log"
    .venv/bin/python "$anchors/$w.py" 2>&1 | tee -a "target/perf/$w.log"
done
for b in inference train_step attack_step prune grid; do
    echo "== bench $b" | tee "target/perf/bench_$b.log"
    cargo bench --bench "$b" 2>&1 | grep -v '^$' | tee -a "target/perf/bench_$b.log"
done

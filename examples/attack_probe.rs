use bayes_robust::attack::{MinNormAttack, Pgd};
use bayes_robust::data::{ChecksumPolicy, RawDataset, SplitSpec, Splits};
use bayes_robust::model::mlp::{MlpConfig, MlpInit};
use bayes_robust::model::{Arch, checkpoint::ModelSpec};
use bayes_robust::train::TrainedModel;
use std::time::Instant;
fn main() {
    let raw = RawDataset::load("data/mnist".as_ref(), ChecksumPolicy::Skip).unwrap();
    let splits = Splits::from_raw(&raw, SplitSpec::PAPER).unwrap();
    let spec = ModelSpec::Mlp {
        config: MlpConfig {
            arch: Arch::new(&[100, 100]),
            init: MlpInit::GlorotUniform,
        },
        lambda: 0.0,
    };
    let (m, _) = TrainedModel::load(
        &spec,
        tch::Device::Cpu,
        "runs/issue3/mlp_FC-100-100-10_lambda=0".as_ref(),
    )
    .unwrap();
    let TrainedModel::Mlp { mlp, .. } = m else {
        panic!()
    };
    let b = splits.test.head(1000);
    for c in [0.05, 0.2, 0.5, 1.0] {
        for steps in [100, 300] {
            let t = Instant::now();
            let out = MinNormAttack {
                c,
                steps,
                ..Default::default()
            }
            .run(&mlp, &b.images, &b.labels);
            println!(
                "c={c} steps={steps}: success {:.3} distortion {:.4} ({:.1}s)",
                out.success_rate(),
                out.mean_distortion(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    let out = Pgd {
        eps: 0.3 * 255.0 / 126.0,
        step: 0.01 * 255.0 / 126.0,
        steps: 40,
        norm: bayes_robust::attack::Norm::Linf,
        random_start: true,
    }
    .run(&mlp, &b.images, &b.labels);
    println!("pgd eps .3: success {:.3}", out.success_rate());
}

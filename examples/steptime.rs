use bayes_robust::model::{
    WeightMode,
    bayes::{BayesConfig, BayesMlp},
};
use std::time::Instant;
use tch::{Kind, Tensor, nn, nn::OptimizerConfig};
fn main() {
    #[allow(deprecated)]
    unsafe {
        if std::env::var("FTZ").is_ok() {
            std::arch::x86_64::_mm_setcsr(std::arch::x86_64::_mm_getcsr() | 0x8040);
        }
    }
    tch::set_num_threads(std::env::var("T").map(|t| t.parse().unwrap()).unwrap_or(2));
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let m = BayesMlp::new(&vs.root(), &BayesConfig::default());
    let mut opt = nn::Sgd {
        momentum: 0.95,
        dampening: 0.0,
        wd: 0.0,
        nesterov: false,
    }
    .build(&vs, 1e-3)
    .unwrap();
    let x = Tensor::rand([128, 784], (Kind::Float, tch::Device::Cpu));
    let y = Tensor::zeros([128], (Kind::Int64, tch::Device::Cpu));
    for (name, kl) in [("nokl", false), ("kl", true), ("nokl", false), ("kl", true)] {
        let t = Instant::now();
        for _ in 0..200 {
            let out = m.forward(&x, 1, WeightMode::Sample, kl);
            let mut loss = out.logits.squeeze_dim(0).cross_entropy_for_logits(&y);
            if let Some(k) = out.kl {
                loss = loss + k.squeeze_dim(0) / 50000.0;
            }
            opt.backward_step(&loss);
        }
        println!(
            "{name}: {:.2} ms/step",
            t.elapsed().as_secs_f64() * 1000.0 / 200.0
        );
    }
    let t = Instant::now();
    for _ in 0..200 {
        let _ = m.forward(&x, 1, WeightMode::Sample, false);
    }
    println!(
        "fwd only: {:.2} ms",
        t.elapsed().as_secs_f64() * 1000.0 / 200.0
    );
    let t = Instant::now();
    for _ in 0..200 {
        let _ = Tensor::randn([1, 784, 100], (Kind::Float, tch::Device::Cpu));
    }
    println!(
        "randn: {:.3} ms",
        t.elapsed().as_secs_f64() * 1000.0 / 200.0
    );
}

use std::time::Instant;
use tch::{Kind, Tensor};
fn t(name: &str, f: impl Fn() -> Tensor) {
    for _ in 0..10 {
        let _ = f();
    }
    let s = Instant::now();
    for _ in 0..500 {
        let _ = f();
    }
    println!("{name}: {:.1} us", s.elapsed().as_secs_f64() * 1e6 / 500.0);
}
fn main() {
    tch::set_num_threads(2);
    let a = Tensor::randn([784, 100], (Kind::Float, tch::Device::Cpu));
    let b = Tensor::randn([784, 100], (Kind::Float, tch::Device::Cpu));
    let x = Tensor::rand([128, 784], (Kind::Float, tch::Device::Cpu));
    t("add", || &a + &b);
    t("mul_scalar", || &a * 3.0);
    t("square", || a.square());
    t("softplus", || a.softplus());
    t("log", || a.abs().log());
    t("sum", || a.sum(Kind::Float));
    t("randn", || {
        Tensor::randn([784, 100], (Kind::Float, tch::Device::Cpu))
    });
    t("rand", || {
        Tensor::rand([784, 100], (Kind::Float, tch::Device::Cpu))
    });
    t("normal_", || {
        Tensor::empty([784, 100], (Kind::Float, tch::Device::Cpu)).normal_(0.0, 1.0)
    });
    t("randn_big16", || {
        Tensor::randn([784 * 100], (Kind::Float, tch::Device::Cpu))
    });
    t("exp", || a.exp());
    t("log1p", || a.abs().log1p());
    t("matmul", || x.matmul(&a));
    t("addmm", || x.matmul(&a) + &b.narrow(0, 0, 1));
}

//! Adds an rpath to the libtorch that tch was built against (LIBTORCH, set by the
//! generated .cargo/config.toml), so binaries, tests and benches load the venv's
//! `torch/lib` without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
    }
}

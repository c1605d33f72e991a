//! Docker Engine API benchmark: `berth bench api` run as the unprivileged test user on the
//! test image: `docker run --rm` through berth's socket beside the berth CLI and podman's
//! API, N concurrent `docker run -d` through each, and the service's memory. Rootful Docker
//! is measured when the bench runs as root (`berth bench api` directly, as root).
//!
//!     cargo bench --bench api                  (BENCH_RUNS, default 20)

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Berth, IMAGE};

fn main() {
    let runs = std::env::var("BENCH_RUNS").unwrap_or_else(|_| "20".into());
    let Some(berth) = Berth::new() else {
        eprintln!("api bench: berth cannot run here (see the reason above)");
        return;
    };
    let args = [
        "bench",
        "api",
        "--image",
        IMAGE,
        "--runs",
        &runs,
        "--warmups",
        "3",
        "--peers",
        "podman",
    ];
    println!(
        "as {} (uid {}), berth binary {}",
        berth.identity.name,
        berth.identity.uid,
        common::berth_bin()
    );
    let out = berth.command(&args).output().expect("running berth bench");
    print!("{}", common::stdout(&out));
    eprint!("{}", common::stderr(&out));
    if !out.status.success() {
        std::process::exit(1);
    }
}

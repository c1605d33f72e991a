//! Startup benchmark: `berth bench startup` run as the unprivileged test user on the test
//! image, so this bench and the CLI share one measuring code (src/bench). Systems: berth's
//! container wall and microVM wall (skipped, with the reason, where KVM cannot boot Linux:
//! see benches/vm_nested.rs for this host's PVM), podman, crun (runc where crun refuses the
//! host), bwrap, berth's VMM and QEMU booting the same kernel, and `unshare` as the floor.
//!
//!     cargo bench --bench startup              (BENCH_RUNS, default 20)
//!     BENCH_CHART=/tmp/startup.svg cargo bench --bench startup

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Berth, IMAGE};

fn main() {
    let runs = std::env::var("BENCH_RUNS").unwrap_or_else(|_| "20".into());
    let Some(berth) = Berth::new() else {
        eprintln!("startup bench: berth cannot run here (see the reason above)");
        return;
    };
    let mut args = vec![
        "bench",
        "startup",
        "--image",
        IMAGE,
        "--runs",
        &runs,
        "--warmups",
        "3",
        "--peers",
        "podman,crun,bwrap,qemu,unshare",
    ];
    let chart = std::env::var("BENCH_CHART").ok();
    if let Some(c) = &chart {
        args.extend(["--chart", c]);
    }
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

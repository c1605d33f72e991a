//! Density benchmark: `berth bench density` for N idle sandboxes (N in BENCH_COUNTS, default
//! "10,50,100"): berth containers, berth microVMs (where KVM can boot Linux; inside
//! scripts/kvm-nested on a PVM host, see benches/vm_nested.rs) and rootless podman, as the
//! unprivileged test user. Time to start all N and memory (PSS) per sandbox, from the same
//! code as the CLI (src/bench).
//!
//!     cargo bench --bench density
//!     BENCH_COUNTS=50 BENCH_CHART=/tmp/density.svg cargo bench --bench density

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Berth, IMAGE};

fn main() {
    let counts = std::env::var("BENCH_COUNTS").unwrap_or_else(|_| "10,50,100".into());
    let Some(berth) = Berth::new() else {
        eprintln!("density bench: berth cannot run here (see the reason above)");
        return;
    };
    println!(
        "as {} (uid {}), berth binary {}",
        berth.identity.name,
        berth.identity.uid,
        common::berth_bin()
    );
    let mut failed = false;
    for count in counts.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let mut args = vec![
            "bench",
            "density",
            "--image",
            IMAGE,
            "--count",
            count,
            "--walls",
            "container,vm",
            "--peers",
            "podman",
        ];
        // One chart per count: /tmp/density.svg -> /tmp/density-50.svg.
        let chart = std::env::var("BENCH_CHART").ok().map(|c| {
            let p = std::path::Path::new(&c);
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            let ext = p.extension().unwrap_or_default().to_string_lossy();
            p.with_file_name(format!("{stem}-{count}.{ext}"))
                .display()
                .to_string()
        });
        if let Some(c) = &chart {
            args.extend(["--chart", c]);
        }
        let out = berth.command(&args).output().expect("running berth bench");
        println!("{}", common::stdout(&out));
        eprint!("{}", common::stderr(&out));
        failed |= !out.status.success();
    }
    if failed {
        std::process::exit(1);
    }
}

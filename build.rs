//! Gives each build of the package an id, compiled into both executables
//! (`BUILD_ID_DROVER`), so that `drover serve` can tell a `drover-supervisor`
//! from the same build from one left over by an earlier build: `cargo run`
//! builds only `drover`, and exec'ing a stale supervisor would run old code
//! with new settings.

use std::time::{SystemTime, UNIX_EPOCH};

// Not `DROVER_…`: cargo also sets this in the environment of what it runs
// (tests, `cargo run`), and drover reads every `DROVER_…` variable as
// configuration.
fn main() {
    // A new id whenever the code of either executable may have changed.
    for path in ["src", "supervisor/src", "worker/src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    println!("cargo:rustc-env=BUILD_ID_DROVER={nanos:x}");
}

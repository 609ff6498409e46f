//! Tells the benches where the server binary of this build profile is. A workspace member gets no
//! `CARGO_BIN_EXE_timelock` for another package's binary, and a bench cannot build it itself
//! (cargo holds the build directory while the bench runs), so `./dev bench` builds it first and
//! the benches check that it is there.
use std::path::PathBuf;

fn main() {
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let profile_dir = out.ancestors().nth(3).expect("OUT_DIR has its usual depth");
    let bin = profile_dir.join(format!("timelock{}", std::env::consts::EXE_SUFFIX));
    println!("cargo:rustc-env=TIMELOCK_BENCH_BIN={}", bin.display());
    println!("cargo:rerun-if-changed=build.rs");
}

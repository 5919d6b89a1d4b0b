//! Exports the VERSION file as PGBR_BUILD_VERSION: VERSION is the single source of truth.
fn main() {
    println!("cargo:rerun-if-changed=VERSION");
    let version = std::fs::read_to_string("VERSION").expect("VERSION file at the crate root");
    println!("cargo:rustc-env=PGBR_BUILD_VERSION={}", version.trim());
}

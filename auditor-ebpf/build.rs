use which::which;

/// Building this crate needs bpf-linker; say so plainly instead of failing
/// deep inside rustc. Rebuild when it changes.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => panic!("bpf-linker not found on PATH: run `cargo xtask setup`"),
    }
}

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Compile the kernel programs (auditor-ebpf) for the BPF target with the
/// nightly toolchain; the object is embedded in the binary.
fn main() -> anyhow::Result<()> {
    // The object embeds the shared ABI: a change there must rebuild it
    // (aya-build only watches the kernel crate itself).
    println!("cargo:rerun-if-changed=../auditor-common/src");
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = meta
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "auditor-ebpf")
        .ok_or_else(|| anyhow!("auditor-ebpf package not found"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("auditor-ebpf has no directory"))?;
    aya_build::build_ebpf(
        [Package {
            name: "auditor-ebpf",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

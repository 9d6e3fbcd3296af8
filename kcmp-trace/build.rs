use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version=1", "--no-deps"])
        .output()
        .context("cargo metadata")?;
    let metadata: serde_json::Value =
        serde_json::from_slice(&metadata.stdout).context("parsing cargo metadata")?;
    let manifest = metadata["packages"]
        .as_array()
        .and_then(|packages| {
            packages
                .iter()
                .find(|p| p["name"] == "kcmp-trace-ebpf")
                .and_then(|p| p["manifest_path"].as_str())
        })
        .ok_or_else(|| anyhow!("kcmp-trace-ebpf package not found"))?;
    let root_dir = std::path::Path::new(manifest)
        .parent()
        .and_then(|p| p.to_str())
        .ok_or_else(|| anyhow!("bad manifest path {manifest}"))?;
    aya_build::build_ebpf(
        [Package {
            name: "kcmp-trace-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )?;
    // The bench's object is built with the tracer's, from the same crate, but only the
    // bench embeds it: kcmp-trace-bench's build script finds it here.
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR")?;
    println!("cargo::metadata=bench_object={out_dir}/kcmp-trace-bench-probes");
    Ok(())
}

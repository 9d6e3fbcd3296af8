//! The bench's eBPF object: kcmp-trace's build script builds it with the tracer's and says
//! where it is (kcmp-trace's `links` metadata).

fn main() {
    const WHERE: &str = "DEP_KCMP_TRACE_PROBES_BENCH_OBJECT";
    println!("cargo::rerun-if-env-changed={WHERE}");
    match std::env::var(WHERE) {
        Ok(path) => println!("cargo::rustc-env=KCMP_TRACE_BENCH_OBJECT={path}"),
        Err(_) => {
            eprintln!("{WHERE} is not set: kcmp-trace's build script did not run");
            std::process::exit(1);
        }
    }
}

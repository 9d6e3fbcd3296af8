//! Attaching one loaded program to one target, whatever its kind: tracepoints, raw
//! tracepoints, kprobes (return probes through `retprobe` where tracefs can define them),
//! fentry and fexit.

use std::os::fd::AsFd as _;

use anyhow::Context as _;
use aya::{Btf, Ebpf, programs::ProbeKind};

use crate::{object::bpf_err, probe::kprobe_events_available, retprobe::ReturnProbe};

/// Loads (once) and attaches one program to one target. Return probes go through tracefs
/// where it can define them (`retprobe`: room for every call in flight), and are kept in
/// `return_probes`.
pub fn attach_program(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    name: &str,
    target: &str,
    return_probes: &mut Vec<ReturnProbe>,
) -> anyhow::Result<()> {
    let btf = || btf.context("no kernel BTF for fentry/fexit");
    use aya::programs::Program;
    let loaded = |fd: Result<_, _>| fd.is_ok();
    match ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
    {
        Program::TracePoint(p) => {
            let (category, tp) = target
                .split_once('/')
                .with_context(|| format!("bad tracepoint {target}"))?;
            if !loaded(p.fd()) {
                p.load().map_err(bpf_err(format!("loading {name}")))?;
            }
            p.attach(category, tp)
                .map_err(bpf_err(format!("attaching {name} to {target}")))?;
        }
        Program::KProbe(p) => {
            if !loaded(p.fd()) {
                p.load().map_err(bpf_err(format!("loading {name}")))?;
            }
            if matches!(p.kind(), ProbeKind::Return) && kprobe_events_available() {
                let program = p.fd()?.as_fd();
                return_probes.push(
                    ReturnProbe::attach(program, target)
                        .with_context(|| format!("attaching {name} to {target}"))?,
                );
            } else {
                p.attach(target, 0)
                    .map_err(bpf_err(format!("attaching {name} to {target}")))?;
            }
        }
        Program::RawTracePoint(p) => {
            if !loaded(p.fd()) {
                p.load().map_err(bpf_err(format!("loading {name}")))?;
            }
            p.attach(target)
                .map_err(bpf_err(format!("attaching {name} to {target}")))?;
        }
        // FEntry and FExit are distinct types with the same load/attach shape.
        Program::FEntry(p) => {
            p.load(target, btf()?)
                .map_err(bpf_err(format!("loading {name} for {target}")))?;
            p.attach()
                .map_err(bpf_err(format!("attaching {name} to {target}")))?;
        }
        Program::FExit(p) => {
            p.load(target, btf()?)
                .map_err(bpf_err(format!("loading {name} for {target}")))?;
            p.attach()
                .map_err(bpf_err(format!("attaching {name} to {target}")))?;
        }
        _ => anyhow::bail!("program {name} is of a kind the planner does not attach"),
    }
    Ok(())
}

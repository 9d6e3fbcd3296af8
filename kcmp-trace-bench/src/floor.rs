//! What only `bench` attaches, from the bench's own eBPF object: do-nothing programs on a
//! plan's hooks (the floor), and one program of the cost ladder alone.

use anyhow::Context as _;
use aya::Ebpf;
use kcmp_trace_common::classify::Strategy;

use kcmp_trace::{
    attach::attach_program,
    bpf_info,
    config::TraceConfig,
    event_stream::EventStream,
    object::{KernelFacts, Object, event_stream, load_object, program_counters},
    plan::{Plan, checks},
    probe,
    retprobe::ReturnProbe,
};
use kcmp_trace_common::programs::bench;

/// The bench's programs: the do-nothing ones and the cost ladder's.
fn bench_object() -> Object {
    Object {
        name: "kcmp-trace-bench-probes",
        bytes: aya::include_bytes_aligned!(env!("KCMP_TRACE_BENCH_OBJECT")),
    }
}

/// Do-nothing programs on the same hooks as a plan: the floor any tracer there pays.
pub struct Floor {
    /// Return probes of the objects below, detached before they unload.
    _return_probes: Vec<ReturnProbe>,
    /// (object, its program's name and target), one per hook.
    objects: Vec<(Ebpf, &'static str, String)>,
}

impl Floor {
    pub fn attach(plan: &Plan, caps: &probe::Capabilities) -> anyhow::Result<Floor> {
        // One object per hook: an fentry program is bound to a single target at load time.
        let btf = caps.kernel_btf.as_deref();
        let mut return_probes = Vec::new();
        let objects = plan
            .hooks
            .iter()
            .map(|hook| {
                let twin = bench::floor_twin(&hook.program)
                    .with_context(|| format!("{} has no do-nothing twin", hook.program))?;
                let mut ebpf = bench_object().load()?;
                attach_program(&mut ebpf, btf, twin, &hook.target, &mut return_probes)?;
                Ok((ebpf, twin, hook.target.clone()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Floor {
            _return_probes: return_probes,
            objects,
        })
    }

    /// What the kernel says about each do-nothing program: (program, its target, run time
    /// and runs while BPF statistics are on, its image).
    pub fn run_stats(
        &self,
    ) -> anyhow::Result<Vec<(&'static str, String, bpf_info::ProgramCounters)>> {
        self.objects
            .iter()
            .map(|(ebpf, program, target)| {
                Ok((*program, target.clone(), program_counters(ebpf, program)?))
            })
            .collect()
    }
}

/// One program attached alone (a tracepoint: no kernel BTF), from an object loaded with a
/// tracer's settings (globals, map sizes): a step of the bench's cost ladder.
pub struct Solo {
    ebpf: Ebpf,
    program: &'static str,
}

impl Solo {
    pub fn attach(
        config: &TraceConfig,
        caps: &probe::Capabilities,
        program: &'static str,
        target: &str,
    ) -> anyhow::Result<Solo> {
        probe::ensure_tracefs()?;
        let facts = KernelFacts {
            comm_offset: checks::comm_offset(caps),
            ..KernelFacts::default()
        };
        let mut ebpf = load_object(bench_object(), config, Strategy::Boundary, facts)?;
        attach_program(&mut ebpf, None, program, target, &mut Vec::new())?;
        Ok(Solo { ebpf, program })
    }

    /// The event stream, for a reader to drain.
    pub fn take_events(&mut self) -> anyhow::Result<EventStream> {
        event_stream(&mut self.ebpf)
    }

    pub fn program_counters(&self) -> anyhow::Result<bpf_info::ProgramCounters> {
        program_counters(&self.ebpf, self.program)
    }
}

#[cfg(test)]
mod tests {
    use kcmp_trace_common::programs;

    use super::*;

    #[test]
    fn the_bench_object_holds_its_table_s_programs_and_no_others() {
        let parsed = aya_obj::Object::parse(bench_object().bytes).expect("the object parses");
        let mut found: Vec<String> = parsed.programs.into_keys().collect();
        found.sort();
        let mut table: Vec<String> = bench::ALL
            .iter()
            .chain(&[programs::COMM_READ, programs::FLUSH_EVENTS])
            .map(|n| n.to_string())
            .collect();
        table.sort();
        assert_eq!(found, table);
    }
}

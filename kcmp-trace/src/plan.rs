//! Which hooks to use on this kernel, chosen by trying: fentry if it attaches, else kprobe,
//! else the syscall tracepoints.

use kcmp_trace_common::classify::Strategy;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachRequest {
    /// The best mode that attaches here.
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

/// How to tell a call's path: the helpers' return values, or the order of what they guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StrategyRequest {
    /// direct where the helpers are real functions, else infer.
    Auto,
    Direct,
    Infer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    Fentry,
    Kprobe,
    Tracepoint,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Fentry => "fentry",
            AttachMode::Kprobe => "kprobe",
            AttachMode::Tracepoint => "tracepoint",
        }
    }

    /// Modes to try, best first.
    pub fn candidates(request: AttachRequest) -> &'static [AttachMode] {
        match request {
            AttachRequest::Auto => &[
                AttachMode::Fentry,
                AttachMode::Kprobe,
                AttachMode::Tracepoint,
            ],
            AttachRequest::Fentry => &[AttachMode::Fentry],
            AttachRequest::Kprobe => &[AttachMode::Kprobe],
            AttachRequest::Tracepoint => &[AttachMode::Tracepoint],
        }
    }
}

/// Candidate (mode, strategy) pairs, best first.
pub fn candidates(attach: AttachRequest, strategy: StrategyRequest) -> Vec<(AttachMode, Strategy)> {
    let strategies: &[Strategy] = match strategy {
        StrategyRequest::Auto => &[Strategy::Direct, Strategy::Infer],
        StrategyRequest::Direct => &[Strategy::Direct],
        StrategyRequest::Infer => &[Strategy::Infer],
    };
    let mut out = Vec::new();
    for &mode in AttachMode::candidates(attach) {
        if mode == AttachMode::Tracepoint {
            // The syscall boundary shows no path; only offer it when no strategy was forced.
            if strategy == StrategyRequest::Auto {
                out.push((mode, Strategy::Boundary));
            }
        } else {
            out.extend(strategies.iter().map(|&s| (mode, s)));
        }
    }
    out
}

/// One attached program.
#[derive(Clone, Debug, Serialize)]
pub struct Hook {
    /// Kernel function or tracepoint.
    pub target: String,
    pub program: String,
    /// The do-nothing program of the same kind, for the benchmark floor.
    #[serde(skip)]
    pub noop: &'static str,
}

/// What the tracer attached, and what that means for the numbers it reports.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub mode: AttachMode,
    #[serde(serialize_with = "strategy_name")]
    pub strategy: Strategy,
    /// The kernel has the exec_update_seq series.
    pub series: bool,
    pub hooks: Vec<Hook>,
    /// Optional hooks that did not attach, and why.
    pub skipped: Vec<(String, String)>,
    /// (mode, strategy) pairs tried before this one, and why each did not attach.
    pub rejected: Vec<(String, String)>,
    /// Whether each reported number is exact, inferred or unavailable on this plan.
    pub accuracy: Vec<(&'static str, String)>,
}

fn strategy_name<S: serde::Serializer>(s: &Strategy, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.name())
}

impl Plan {
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "attach: {}, strategy {}, exec_update_seq series {}",
            self.mode.name(),
            self.strategy.name(),
            if self.series { "present" } else { "absent" }
        )];
        for h in &self.hooks {
            lines.push(format!("  {:<22} {}", h.program, h.target));
        }
        for (target, why) in &self.skipped {
            lines.push(format!("  skipped {target}: {why}"));
        }
        for (what, why) in &self.rejected {
            lines.push(format!("  {what} not used: {why}"));
        }
        for (counter, how) in &self.accuracy {
            lines.push(format!("  {counter}: {how}"));
        }
        lines
    }
}

//! Which hooks to use on this kernel, chosen by trying: fentry if it attaches, else kprobe,
//! else the syscall tracepoints.

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

/// One attached program.
#[derive(Clone, Debug, Serialize)]
pub struct Hook {
    /// Kernel function or tracepoint.
    pub target: String,
    pub program: &'static str,
    pub mode: AttachMode,
}

/// What the tracer attached, and what that means for the numbers it reports.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub mode: AttachMode,
    pub hooks: Vec<Hook>,
    /// Modes tried before this one, and why each did not attach.
    pub rejected: Vec<(AttachMode, String)>,
    /// Whether each reported number is exact or unavailable on this plan.
    pub accuracy: Vec<(&'static str, &'static str)>,
}

impl Plan {
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "attach: {} ({})",
            self.mode.name(),
            self.hooks
                .iter()
                .map(|h| format!("{}={}", h.program, h.target))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        for (mode, why) in &self.rejected {
            lines.push(format!("  {} not used: {why}", mode.name()));
        }
        for (counter, how) in &self.accuracy {
            lines.push(format!("  {counter}: {how}"));
        }
        lines
    }
}

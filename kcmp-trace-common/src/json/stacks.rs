//! Kernel stacks of exec_update_lock's waiters and writers (`--stacks`) as every sink shows
//! them: rows in JSON, folded stacks for flame-graph tools, the top waiting call sites.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    event::comm_bytes,
    json::event::WriterKind,
    outcome::Outcome,
    stacks::{StackCounts, StackKey, stack_ref, who},
};

/// The frame of a wait no hook saw (`stack_ref::UNCONTENDED`): taken without contention.
pub const UNCONTENDED_FRAME: &str = "[uncontended]";
/// The frame of a stack that was not kept (`stack_ref::LOST`).
pub const LOST_FRAME: &str = "[stack lost]";

/// Lock waits (or write sections) of one waiter (or writer) with one kernel stack: since
/// attach, or over an interval.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct StackRow {
    /// `kcmp`, a /proc reader (`proc_stack`, `proc_syscall`, `proc_wchan`), `other`, or a
    /// writer: `exec`, `tsync`.
    pub who: String,
    /// The outcome of the call that waited (kcmp and the /proc readers); absent for other
    /// callers and writers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Functions, outermost first, symbolized through kallsyms; one `[uncontended]` frame
    /// for waits no hook saw (contention tracepoints see only contended ones), one
    /// `[stack lost]` frame for stacks the stack map had no room for.
    pub frames: Vec<String>,
    /// Lock waits; write sections for a writer.
    pub count: u64,
    /// Their summed wait time; hold time for a writer.
    pub time_ns: u64,
    /// Who held the lock for writing as these waits began: the process whose write section
    /// was open on it. Absent when none was (and for writers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<HolderRecord>,
}

/// A write section's process, as a wait's holder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct HolderRecord {
    pub kind: WriterKind,
    pub tgid: u32,
    /// Its comm as its latest write section opened.
    pub comm: String,
}

impl std::fmt::Display for HolderRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.kind.name(), self.tgid, self.comm)
    }
}

/// What rows are merged by: waiter, outcome, frames, holder.
type RowKey = (String, Option<String>, Vec<String>, Option<HolderRecord>);

/// What a folded stack's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoldBy {
    Count,
    Time,
}

impl StackRow {
    /// The row of a kernel-side key, its counts, and its stack's frames (innermost first,
    /// as the stack map keeps them), named by `symbol`. None for a key of no known waiter.
    pub fn of(
        key: &StackKey,
        counts: &StackCounts,
        frames: Option<&[u64]>,
        symbol: impl Fn(u64) -> String,
    ) -> Option<StackRow> {
        let who = who::name(key.who)?;
        let frames = match (key.stack, frames) {
            (stack_ref::UNCONTENDED, _) => vec![UNCONTENDED_FRAME.to_owned()],
            (_, Some(ips)) if !ips.is_empty() => {
                // Below the innermost frame each address is a return address: the call
                // that made it sits just before, so the function is that of address - 1.
                let mut names: Vec<String> = ips
                    .iter()
                    .enumerate()
                    .map(|(i, &ip)| symbol(if i == 0 { ip } else { ip.saturating_sub(1) }))
                    .collect();
                names.reverse();
                names
            }
            _ => vec![LOST_FRAME.to_owned()],
        };
        Some(StackRow {
            who: who.to_owned(),
            outcome: (!who::is_writer(key.who) && key.who != who::OTHER)
                .then(|| Outcome::from_u8(key.outcome as u8).name().to_owned()),
            frames,
            count: counts.count,
            time_ns: counts.time_ns,
            holder: WriterKind::from_raw(key.holder.kind)
                .filter(|_| key.holder.is_some())
                .map(|kind| HolderRecord {
                    kind,
                    tgid: key.holder.tgid,
                    comm: String::from_utf8_lossy(comm_bytes(&key.holder_comm)).into_owned(),
                }),
        })
    }

    fn key(&self) -> RowKey {
        (
            self.who.clone(),
            self.outcome.clone(),
            self.frames.clone(),
            self.holder.clone(),
        )
    }

    /// Rows with the same waiter, outcome, frames and holder summed (stacks that differ
    /// only in offsets within the same functions), busiest first, then by name.
    pub fn merged(rows: impl IntoIterator<Item = StackRow>) -> Vec<StackRow> {
        let mut merged: BTreeMap<RowKey, StackCounts> = BTreeMap::new();
        for row in rows {
            merged.entry(row.key()).or_default().add(&StackCounts {
                count: row.count,
                time_ns: row.time_ns,
            });
        }
        let mut rows: Vec<StackRow> = merged
            .into_iter()
            .map(|((who, outcome, frames, holder), c)| StackRow {
                who,
                outcome,
                frames,
                count: c.count,
                time_ns: c.time_ns,
                holder,
            })
            .collect();
        rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key().cmp(&b.key())));
        rows
    }

    /// Each row's counts since `earlier` (rows of merged readings), those with none left out.
    pub fn deltas(now: &[StackRow], earlier: &[StackRow]) -> Vec<StackRow> {
        let before: BTreeMap<_, &StackRow> = earlier.iter().map(|r| (r.key(), r)).collect();
        now.iter()
            .filter_map(|row| {
                let (count, time_ns) = before
                    .get(&row.key())
                    .map_or((0, 0), |b| (b.count, b.time_ns));
                let count = row.count.saturating_sub(count);
                (count != 0).then(|| StackRow {
                    count,
                    time_ns: row.time_ns.saturating_sub(time_ns),
                    ..row.clone()
                })
            })
            .collect()
    }

    /// The flame graph's root frame: whose, and the call's outcome (`kcmp:busy`).
    pub fn root(&self) -> String {
        match &self.outcome {
            Some(outcome) => format!("{}:{outcome}", self.who),
            None => self.who.clone(),
        }
    }

    /// The sum over `rows` of waits (not writers') of `who`.
    pub fn waits_of(rows: &[StackRow], who: &str) -> u64 {
        rows.iter().filter(|r| r.who == who).map(|r| r.count).sum()
    }
}

/// Folded stacks (`root;outermost;...;innermost value`), one line per stack with a value
/// (its holders' rows summed), in the rows' order, for every flame-graph tool
/// (flamegraph.pl, inferno, speedscope). Writers (whose time is a hold, not a wait) only
/// when `writers` asks for them.
pub fn folded(rows: &[StackRow], by: FoldBy, writers: bool) -> String {
    let mut stacks: Vec<(String, u64)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    for row in rows {
        if !writers && is_writer_name(&row.who) {
            continue;
        }
        let value = match by {
            FoldBy::Count => row.count,
            FoldBy::Time => row.time_ns,
        };
        if value == 0 {
            continue;
        }
        let mut stack = row.root();
        for frame in &row.frames {
            stack.push(';');
            // `;` separates frames and the last space the value: neither may be in a name.
            stack.extend(
                frame
                    .chars()
                    .map(|c| if c == ';' || c == ' ' { '_' } else { c }),
            );
        }
        match index.get(&stack) {
            Some(&i) => stacks[i].1 += value,
            None => {
                index.insert(stack.clone(), stacks.len());
                stacks.push((stack, value));
            }
        }
    }
    stacks
        .into_iter()
        .map(|(stack, value)| format!("{stack} {value}\n"))
        .collect()
}

/// Lock waits by holder, as `perf lock contention -o` gives them by owner: per waiter
/// (kcmp, a /proc reader, other) and holder (None: no write section was open as the wait
/// began), their count and wait time, most wait time first. Each waiter's rows add up to
/// its lock waits.
pub fn by_holder(rows: &[StackRow]) -> Vec<(String, Option<HolderRecord>, StackCounts)> {
    let mut holders: BTreeMap<(String, Option<HolderRecord>), StackCounts> = BTreeMap::new();
    for row in rows.iter().filter(|r| !is_writer_name(&r.who)) {
        holders
            .entry((row.who.clone(), row.holder.clone()))
            .or_default()
            .add(&StackCounts {
                count: row.count,
                time_ns: row.time_ns,
            });
    }
    let mut holders: Vec<_> = holders
        .into_iter()
        .map(|((who, holder), counts)| (who, holder, counts))
        .collect();
    holders.sort_by(|a, b| {
        b.2.time_ns
            .cmp(&a.2.time_ns)
            .then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1)))
    });
    holders
}

/// The `n` waiting call sites with the most lock waits: (whose, the innermost frame below
/// the lock functions, waits, wait time). A bounded label set for `/metrics`.
pub fn top_sites(rows: &[StackRow], n: usize) -> Vec<(String, String, u64, u64)> {
    let mut sites: BTreeMap<(String, String), StackCounts> = BTreeMap::new();
    for row in rows.iter().filter(|r| !is_writer_name(&r.who)) {
        sites
            .entry((row.who.clone(), call_site(&row.frames).to_owned()))
            .or_default()
            .add(&StackCounts {
                count: row.count,
                time_ns: row.time_ns,
            });
    }
    let mut sites: Vec<_> = sites
        .into_iter()
        .map(|((who, site), c)| (who, site, c.count, c.time_ns))
        .collect();
    sites.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
    sites.truncate(n);
    sites
}

fn is_writer_name(name: &str) -> bool {
    [who::EXEC, who::TSYNC]
        .iter()
        .any(|&w| who::name(w) == Some(name))
}

/// The function that asked for the lock: the innermost frame that is not the lock's own
/// machinery (down_read*, rwsem_*, the contention tracepoint and its BPF trampolines).
pub fn call_site(frames: &[String]) -> &str {
    const LOCK_MACHINERY: [&str; 6] = [
        "down_read",
        "rwsem_",
        "__down_read",
        "bpf_",
        "__traceiter_",
        "__bpf_trace_",
    ];
    frames
        .iter()
        .rev()
        .find(|f| !LOCK_MACHINERY.iter().any(|m| f.starts_with(m)))
        .or(frames.first())
        .map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::Holder;

    fn row(
        who: &str,
        outcome: Option<&str>,
        frames: &[&str],
        count: u64,
        time_ns: u64,
    ) -> StackRow {
        StackRow {
            who: who.into(),
            outcome: outcome.map(str::to_owned),
            frames: frames.iter().map(|f| f.to_string()).collect(),
            count,
            time_ns,
            holder: None,
        }
    }

    fn racer(kind: WriterKind, tgid: u32) -> Option<HolderRecord> {
        Some(HolderRecord {
            kind,
            tgid,
            comm: "exe".into(),
        })
    }

    #[test]
    fn a_kernel_key_becomes_a_row_outermost_first() {
        let key = StackKey {
            stack: 5,
            who: who::KCMP,
            outcome: Outcome::Busy as u32,
            holder: Holder {
                tgid: 42,
                kind: crate::maps::writer::TSYNC,
            },
            holder_comm: crate::event::comm_key(b"exe"),
        };
        let counts = StackCounts {
            count: 3,
            time_ns: 900,
        };
        let names = |ip: u64| format!("f{ip:x}");
        let r = StackRow::of(&key, &counts, Some(&[0x10, 0x21, 0x31]), names).unwrap();
        // The innermost address as is; return addresses one byte back.
        assert_eq!(r.frames, ["f30", "f20", "f10"]);
        assert_eq!(r.outcome.as_deref(), Some("busy"));
        assert_eq!(r.root(), "kcmp:busy");
        assert_eq!(r.holder, racer(WriterKind::Tsync, 42));
        let unheld = StackKey {
            holder: Holder::NONE,
            holder_comm: [0; crate::event::COMM_LEN],
            ..key
        };
        assert_eq!(
            StackRow::of(&unheld, &counts, None, names).unwrap().holder,
            None
        );

        let writer = StackKey {
            stack: stack_ref::LOST,
            who: who::TSYNC,
            ..key
        };
        let r = StackRow::of(&writer, &counts, None, names).unwrap();
        assert_eq!(
            (r.frames.as_slice(), r.outcome),
            (&[LOST_FRAME.to_owned()][..], None)
        );
        let quiet = StackKey {
            stack: stack_ref::UNCONTENDED,
            ..key
        };
        let r = StackRow::of(&quiet, &counts, None, names).unwrap();
        assert_eq!(r.frames, [UNCONTENDED_FRAME]);
        let unknown = StackKey {
            who: who::SLOTS,
            ..key
        };
        assert!(StackRow::of(&unknown, &counts, None, names).is_none());
    }

    #[test]
    fn folded_lines_sum_to_the_rows_and_skip_writers_unless_asked() {
        let rows = StackRow::merged([
            row(
                "kcmp",
                Some("busy"),
                &["sys_kcmp", "down_read_killable"],
                2,
                50,
            ),
            row(
                "kcmp",
                Some("busy"),
                &["sys_kcmp", "down_read_killable"],
                1,
                10,
            ),
            row(
                "other",
                None,
                &["sys_open", "mm_access", "down_read_killable"],
                4,
                0,
            ),
            row("tsync", None, &["sys_landlock", "landlock_restrict"], 7, 99),
        ]);
        assert_eq!(rows.len(), 3);
        let by_count = folded(&rows, FoldBy::Count, false);
        assert_eq!(
            by_count,
            "other;sys_open;mm_access;down_read_killable 4\n\
             kcmp:busy;sys_kcmp;down_read_killable 3\n"
        );
        // A value of 0 has no line; writers only when asked.
        assert_eq!(
            folded(&rows, FoldBy::Time, false),
            "kcmp:busy;sys_kcmp;down_read_killable 60\n"
        );
        assert!(
            folded(&rows, FoldBy::Time, true).contains("tsync;sys_landlock;landlock_restrict 99")
        );
        let spaced = [row("kcmp", None, &["a b;c"], 1, 1)];
        assert_eq!(folded(&spaced, FoldBy::Count, false), "kcmp;a_b_c 1\n");
    }

    #[test]
    fn holders_split_rows_not_folded_lines_and_add_up_per_waiter() {
        let held = |tgid, count, time_ns| StackRow {
            holder: racer(WriterKind::Exec, tgid),
            ..row("other", None, &["sys_open", "mm_access"], count, time_ns)
        };
        let rows = StackRow::merged([
            held(7, 2, 500),
            held(8, 1, 900),
            held(7, 1, 100),
            row("other", None, &["sys_open", "mm_access"], 10, 30),
            row("kcmp", Some("busy"), &["sys_kcmp"], 1, 5),
            StackRow {
                holder: racer(WriterKind::Exec, 7),
                ..row("exec", None, &["begin_new_exec"], 4, 9999)
            },
        ]);
        // Rows by holder; one folded line per stack, whatever held it.
        assert_eq!(rows.len(), 5);
        assert_eq!(
            folded(&rows, FoldBy::Count, false),
            "other;sys_open;mm_access 14\nkcmp:busy;sys_kcmp 1\n"
        );
        let table = by_holder(&rows);
        let summary: Vec<_> = table
            .iter()
            .map(|(who, h, c)| (who.as_str(), h.as_ref().map(|h| h.tgid), c.count, c.time_ns))
            .collect();
        assert_eq!(
            summary,
            [
                ("other", Some(8), 1, 900),
                ("other", Some(7), 3, 600),
                ("other", None, 10, 30),
                ("kcmp", None, 1, 5),
            ],
            "most wait time first, writers left out"
        );
        let others: u64 = table
            .iter()
            .filter(|r| r.0 == "other")
            .map(|r| r.2.count)
            .sum();
        assert_eq!(others, StackRow::waits_of(&rows, "other"));
        assert_eq!(
            racer(WriterKind::Exec, 7).unwrap().to_string(),
            "exec 7 exe"
        );
    }

    #[test]
    fn deltas_and_top_sites() {
        let before = [row(
            "kcmp",
            Some("locked"),
            &["x", "down_read_killable"],
            2,
            20,
        )];
        let now = [
            row("kcmp", Some("locked"), &["x", "down_read_killable"], 5, 80),
            row(
                "other",
                None,
                &["y", "mm_access", "down_read_killable"],
                1,
                5,
            ),
            row("exec", None, &["z", "begin_new_exec"], 9, 5),
        ];
        let d = StackRow::deltas(&now, &before);
        assert_eq!((d[0].count, d[0].time_ns), (3, 60));
        assert_eq!(d.len(), 3);
        assert_eq!(StackRow::waits_of(&d, "kcmp"), 3);
        assert_eq!(
            top_sites(&d, 1),
            [("kcmp".to_owned(), "x".to_owned(), 3, 60)]
        );
        assert_eq!(top_sites(&d, 5).len(), 2, "writers are not waiting sites");
        assert_eq!(call_site(&d[1].frames), "mm_access");
        assert_eq!(call_site(&["[uncontended]".to_owned()]), "[uncontended]");
    }
}

//! `/events`: per-call events fanned out to HTTP clients, each with its own filter and a
//! bounded queue. One task drains the ring buffer; it never waits for a client: when a
//! client's queue is full its events are dropped, counted, and the client is told.

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use kcmp_trace_common::{
    event::{COMM_LEN, Event, comm_bytes},
    json::event::{DropNotice, DropReason},
    kcmp::{TYPE_SLOT_INVALID, parse_type, type_slot},
    maps::misc,
    outcome::Outcome,
};
use tokio::sync::{Notify, mpsc, watch};

use super::{
    conns::Peer,
    reads::{Reads, Snapshot},
};
use crate::{
    event_stream::{EventReader, EventSink, EventStream},
    sinks::event::EventRecord,
};

/// Values one client's filter may give, over all its keys: every event is checked against
/// them.
pub const MAX_FILTER_VALUES: usize = 64;

/// Which events a client wants; every given key must match, any of a key's values may.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Sorted, for a binary search per event.
    pids: Vec<u32>,
    comms: Vec<Vec<u8>>,
    types: Vec<u32>,
    outcomes: Vec<Outcome>,
}

impl Filter {
    /// Parses `pid`, `comm`, `type` and `outcome` (repeated or comma-separated); the error is
    /// one line for an HTTP 400.
    pub fn parse(query: Option<&str>) -> Result<Filter, String> {
        let mut f = Filter::default();
        let mut given = 0;
        for (key, values) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            for value in values.split(',') {
                if value.is_empty() {
                    return Err(format!("{key}: empty value"));
                }
                given += 1;
                if given > MAX_FILTER_VALUES {
                    return Err(format!(
                        "more than {MAX_FILTER_VALUES} filter values (pid, comm, type, outcome)"
                    ));
                }
                match &*key {
                    "pid" => f.pids.push(
                        value
                            .parse::<u32>()
                            .ok()
                            .filter(|&p| p > 0)
                            .ok_or_else(|| format!("pid: {value:?} is not a process id"))?,
                    ),
                    "comm" => {
                        if value.len() >= COMM_LEN {
                            return Err(format!(
                                "comm: {value:?} is longer than the kernel's {} bytes",
                                COMM_LEN - 1
                            ));
                        }
                        f.comms.push(value.as_bytes().to_vec());
                    }
                    "type" => f.types.push(if value.eq_ignore_ascii_case("invalid") {
                        TYPE_SLOT_INVALID
                    } else {
                        type_slot(u64::from(parse_type(value).ok_or_else(|| {
                            format!("type: {value:?} is not a kcmp type (e.g. KCMP_FILE, vm, 7, invalid)")
                        })?))
                    }),
                    "outcome" => f.outcomes.push(Outcome::parse(value).ok_or_else(|| {
                        let names: Vec<_> = Outcome::ALL.iter().map(|o| o.name()).collect();
                        format!("outcome: {value:?} is not one of {}", names.join(", "))
                    })?),
                    _ => {
                        return Err(format!(
                            "unknown parameter {key:?} (filters: pid, comm, type, outcome)"
                        ));
                    }
                }
            }
        }
        f.pids.sort_unstable();
        f.pids.dedup();
        Ok(f)
    }

    pub fn matches(&self, e: &Event) -> bool {
        (self.pids.is_empty() || self.pids.binary_search(&e.tgid).is_ok())
            && (self.comms.is_empty() || self.comms.iter().any(|c| c == comm_bytes(&e.comm)))
            && (self.types.is_empty() || self.types.contains(&type_slot(e.raw_type as u64)))
            && (self.outcomes.is_empty() || self.outcomes.contains(&e.outcome()))
    }
}

/// Drops one client has not been told about yet, and what it has queued.
#[derive(Debug, Default)]
struct Pending {
    slow_client: AtomicU64,
    ring_buffer: AtomicU64,
    /// Bytes of NDJSON handed to the client and not yet written out.
    queued: AtomicU64,
    wake: Notify,
}

struct Client {
    filter: Filter,
    /// Who connected it, for their share of the cap (None: not known).
    peer: Option<Peer>,
    /// A chunk of NDJSON lines per batch. Unbounded as a channel; the hub's byte budgets
    /// bound it.
    tx: mpsc::UnboundedSender<Bytes>,
    pending: Arc<Pending>,
}

/// How much NDJSON may wait for slow writes before events are dropped: enough to ride out
/// the scheduling delays of a loaded machine at line rate, bounded in all.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub per_client: u64,
    pub total: u64,
}

/// The connected clients and what was dropped for them.
pub struct Hub {
    clients: Mutex<Vec<Client>>,
    /// The length of `clients`, readable without the lock the event thread holds.
    connected: AtomicUsize,
    max_clients: usize,
    /// Most clients one peer may have, so that one user cannot take every slot.
    max_per_client: usize,
    budget: Budget,
    /// Bytes queued over all clients (each stream takes its writes off).
    queued: Arc<AtomicU64>,
    slow_drops: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
}

/// Why a client was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    ClientShare,
    Closing,
}

/// How a client reads the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One JSON object per line.
    Ndjson,
    /// Server-sent events, for browsers' EventSource.
    Sse,
}

impl Hub {
    pub fn new(max_clients: usize, max_per_client: usize, budget: Budget) -> Hub {
        Hub {
            clients: Mutex::new(Vec::new()),
            connected: AtomicUsize::new(0),
            max_clients,
            max_per_client,
            budget,
            queued: Arc::default(),
            slow_drops: AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        // A panic elsewhere must not take the event stream down with it.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connected clients; never waits for the event thread (scrapes read it).
    pub fn clients(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Events dropped because a client read too slowly, over all clients ever connected.
    pub fn slow_drops(&self) -> u64 {
        self.slow_drops.load(Ordering::Relaxed)
    }

    /// Bytes waiting to be written to clients.
    pub fn queued_bytes(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn max_clients(&self) -> usize {
        self.max_clients
    }

    pub fn max_per_client(&self) -> usize {
        self.max_per_client
    }

    /// A new client's stream, unless the hub or the peer's share of it is full, or the hub
    /// is shutting down.
    pub fn subscribe(
        &self,
        filter: Filter,
        framing: Framing,
        peer: Option<Peer>,
    ) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static, Refused> {
        let mut clients = self.lock();
        if self.closed.load(Ordering::Relaxed) {
            return Err(Refused::Closing);
        }
        // Clients that left free their slots now, not at the next batch.
        self.forget_departed(&mut clients);
        if clients.len() >= self.max_clients {
            return Err(Refused::Full);
        }
        if peer.is_some()
            && clients.iter().filter(|c| c.peer == peer).count() >= self.max_per_client
        {
            return Err(Refused::ClientShare);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(Pending::default());
        clients.push(Client {
            filter,
            peer,
            tx,
            pending: pending.clone(),
        });
        self.connected.store(clients.len(), Ordering::Relaxed);
        Ok(client_stream(rx, pending, self.queued.clone(), framing))
    }

    /// Drops clients whose stream is gone, with what they left queued.
    fn forget_departed(&self, clients: &mut Vec<Client>) {
        clients.retain(|c| {
            if !c.tx.is_closed() {
                return true;
            }
            // The stream is dropped: nothing else takes its bytes off the total.
            let left = c.pending.queued.swap(0, Ordering::Relaxed);
            self.queued.fetch_sub(left, Ordering::Relaxed);
            false
        });
        self.connected.store(clients.len(), Ordering::Relaxed);
    }

    /// Hands a batch of events (possibly none) to every client that wants them, one chunk
    /// per client, and forgets clients that went away.
    fn publish(&self, events: &[Event]) {
        let mut clients = self.lock();
        self.forget_departed(&mut clients);
        if clients.is_empty() || events.is_empty() {
            return;
        }
        // Each event is serialized once, and only if someone wants it.
        let mut lines = Vec::new();
        let mut spans: Vec<Option<std::ops::Range<usize>>> = vec![None; events.len()];
        for client in clients.iter() {
            let room = self
                .budget
                .per_client
                .saturating_sub(client.pending.queued.load(Ordering::Relaxed))
                .min(
                    self.budget
                        .total
                        .saturating_sub(self.queued.load(Ordering::Relaxed)),
                );
            let mut chunk = BytesMut::new();
            let mut dropped = 0u64;
            for (event, span) in events.iter().zip(spans.iter_mut()) {
                if !client.filter.matches(event) {
                    continue;
                }
                let span = span.get_or_insert_with(|| {
                    let start = lines.len();
                    let _ = serde_json::to_writer(&mut lines, &EventRecord::from(event));
                    lines.push(b'\n');
                    start..lines.len()
                });
                // Once one event does not fit, later ones are dropped too: a client's
                // stream has gaps only where it is told about them.
                if dropped > 0 || (chunk.len() + span.len()) as u64 > room {
                    dropped += 1;
                    continue;
                }
                chunk.extend_from_slice(&lines[span.clone()]);
            }
            if !chunk.is_empty() {
                let bytes = chunk.len() as u64;
                client.pending.queued.fetch_add(bytes, Ordering::Relaxed);
                self.queued.fetch_add(bytes, Ordering::Relaxed);
                let _ = client.tx.send(chunk.freeze());
            }
            if dropped > 0 {
                client
                    .pending
                    .slow_client
                    .fetch_add(dropped, Ordering::Relaxed);
                self.slow_drops.fetch_add(dropped, Ordering::Relaxed);
                client.pending.wake.notify_one();
            }
        }
    }

    /// Tells every client the kernel dropped `n` events (of any process) on a full ring.
    fn ring_dropped(&self, n: u64) {
        let mut clients = self.lock();
        self.forget_departed(&mut clients);
        for client in clients.iter() {
            client.pending.ring_buffer.fetch_add(n, Ordering::Relaxed);
            client.pending.wake.notify_one();
        }
    }

    /// Ends every stream once its queued events are sent; refuses new clients.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.lock().clear();
        self.connected.store(0, Ordering::Relaxed);
    }
}

/// A chunk's NDJSON lines in the client's framing.
fn frame_lines(framing: Framing, lines: &[u8], out: &mut BytesMut) {
    match framing {
        Framing::Ndjson => out.extend_from_slice(lines),
        Framing::Sse => {
            for line in lines.split_inclusive(|&b| b == b'\n') {
                frame(framing, None, line, out);
            }
        }
    }
}

fn frame(framing: Framing, kind: Option<&str>, json: &[u8], out: &mut BytesMut) {
    match framing {
        Framing::Ndjson => out.extend_from_slice(json),
        Framing::Sse => {
            // Calls are plain messages (EventSource.onmessage); notices have their own type.
            if let Some(kind) = kind {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(kind.as_bytes());
                out.extend_from_slice(b"\n");
            }
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(json.strip_suffix(b"\n").unwrap_or(json));
            out.extend_from_slice(b"\n\n");
        }
    }
}

/// Drop notices owed to the client, as stream lines.
fn drop_notices(pending: &Pending, framing: Framing, out: &mut BytesMut) {
    for (counter, reason) in [
        (&pending.ring_buffer, DropReason::RingBuffer),
        (&pending.slow_client, DropReason::SlowClient),
    ] {
        let dropped = counter.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let mut line = serde_json::to_vec(&DropNotice { dropped, reason })
                .unwrap_or_else(|e| unreachable!("a drop notice is JSON: {e}"));
            line.push(b'\n');
            frame(framing, Some("dropped"), &line, out);
        }
    }
}

fn client_stream(
    rx: mpsc::UnboundedReceiver<Bytes>,
    pending: Arc<Pending>,
    hub_queued: Arc<AtomicU64>,
    framing: Framing,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    futures_util::stream::unfold(Some((rx, pending)), move |state| {
        let hub_queued = hub_queued.clone();
        async move {
            let (mut rx, pending) = state?;
            loop {
                let mut out = BytesMut::new();
                let first = tokio::select! {
                    line = rx.recv() => match line {
                        Some(line) => Some(line),
                        None => {
                            // The hub closed: last notices, then the end of the stream.
                            drop_notices(&pending, framing, &mut out);
                            return (!out.is_empty()).then(|| (Ok(out.freeze()), None));
                        }
                    },
                    _ = pending.wake.notified() => None,
                };
                drop_notices(&pending, framing, &mut out);
                if let Some(chunk) = first {
                    let mut chunk = Some(chunk);
                    // Whatever else is queued goes out in the same write, up to a few batches.
                    for _ in 0..8 {
                        let Some(lines) = chunk.take().or_else(|| rx.try_recv().ok()) else {
                            break;
                        };
                        pending
                            .queued
                            .fetch_sub(lines.len() as u64, Ordering::Relaxed);
                        hub_queued.fetch_sub(lines.len() as u64, Ordering::Relaxed);
                        frame_lines(framing, &lines, &mut out);
                    }
                }
                if !out.is_empty() {
                    return Some((Ok(out.freeze()), Some((rx, pending))));
                }
            }
        }
    })
}

/// Runs [`pump`] on a thread of its own at nice `nice` (by default lower priority: under
/// load the kernel then runs the HTTP workers first, so scrapes stay fast while event
/// fan-out takes what is left). The receiver gets the pump's result when it ends.
pub fn spawn_pump(
    ring: EventStream,
    hub: Arc<Hub>,
    reads: Reads,
    nice: i32,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<anyhow::Result<()>>> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kcmp-events".into())
        .spawn(move || {
            // Whatever happens, even a panic, streams must end so shutdown is not held up.
            let _close = CloseOnDrop(hub.clone());
            // SAFETY: plain syscalls on this thread's own id.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) }
                != 0
            {
                log::warn!(
                    "event thread stays at its nice value ({})",
                    std::io::Error::last_os_error()
                );
            }
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(pump(ring, hub, reads, stop)));
            let _ = done_tx.send(result);
        })
        .context("starting the event thread")?;
    Ok(done_rx)
}

struct CloseOnDrop(Arc<Hub>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Drains the ring buffer into the hub until `stop` turns true, then closes the hub.
pub async fn pump(
    ring: EventStream,
    hub: Arc<Hub>,
    reads: Reads,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let reader = EventReader::new(ring)?;
    let mut ring_drops = 0u64;
    let report_ring_drops = |seen: &mut u64, snapshot: Option<Arc<Snapshot>>| {
        if let Some(snapshot) = snapshot {
            let now = snapshot.counters.misc[misc::EVENTS_DROPPED];
            if now > *seen {
                hub.ring_dropped(now - *seen);
                *seen = now;
            }
        }
    };
    let mut sink = HubSink {
        hub: &hub,
        batch: Vec::new(),
    };
    let drained = {
        let drain = reader.run(&mut sink, async {
            let _ = stop.changed().await;
        });
        // The last snapshot, not a fresh read: draining must not wait for the reader.
        let ring_drops_check = async {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                report_ring_drops(&mut ring_drops, reads.latest());
            }
        };
        tokio::select! {
            drained = drain => drained?,
            never = ring_drops_check => match never {},
        }
    };
    if let Some(line) = drained.unflushed.warning() {
        log::warn!("at shutdown, {line}");
    }
    report_ring_drops(&mut ring_drops, reads.fresh(false).await.ok());
    hub.close();
    Ok(())
}

/// The daemon's reader sink: each batch goes to the hub at once. The reader ends a batch at
/// least every drain tick, so clients that left are forgotten with no event at all.
struct HubSink<'a> {
    hub: &'a Hub,
    batch: Vec<Event>,
}

impl EventSink for HubSink<'_> {
    fn take(&mut self, event: &Event) -> anyhow::Result<()> {
        self.batch.push(*event);
        Ok(())
    }

    fn batch_end(&mut self) -> anyhow::Result<()> {
        self.hub.publish(&self.batch);
        self.batch.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use kcmp_trace_common::event::comm_key;

    fn event(tgid: u32, comm: &str, raw_type: i64, outcome: Outcome) -> Event {
        Event {
            ts_ns: 1,
            latency_ns: 2,
            lock_wait_ns: 0,
            idx1: 0,
            idx2: 0,
            ret: 0,
            raw_type,
            writer_overlap_ns: 0,
            lock_wait_start_ns: 0,
            writer_start_ns: 0,
            writer_end_ns: 0,
            tgid,
            tid: tgid,
            pid1: 1,
            pid2: 1,
            writer_tgid: 0,
            writer_tid: 0,
            writer_kind: 0,
            outcome: outcome as u32,
            epoll: Default::default(),
            comm: comm_key(comm.as_bytes()),
            writer_comm: [0; COMM_LEN],
        }
    }

    #[test]
    fn filters_parse_and_match() {
        let f = Filter::parse(Some("pid=10,11&type=vm&outcome=unknown")).unwrap();
        assert!(f.matches(&event(10, "a", 1, Outcome::Unknown)));
        assert!(f.matches(&event(11, "a", 1, Outcome::Unknown)));
        assert!(!f.matches(&event(12, "a", 1, Outcome::Unknown)));
        assert!(!f.matches(&event(10, "a", 0, Outcome::Unknown)));
        assert!(!f.matches(&event(10, "a", 1, Outcome::Fast)));
        let f = Filter::parse(Some("comm=kcmp%2Dtrace&type=KCMP_FILE&type=invalid")).unwrap();
        assert!(f.matches(&event(1, "kcmp-trace", 0, Outcome::Fast)));
        assert!(f.matches(&event(1, "kcmp-trace", 99, Outcome::Fast)));
        assert!(!f.matches(&event(1, "kcmp", 0, Outcome::Fast)));
        assert_eq!(Filter::parse(None), Ok(Filter::default()));
        for bad in [
            "pid=x",
            "pid=0",
            "pid=",
            "type=bogus",
            "outcome=slow",
            "comm=aaaaaaaaaaaaaaaaaaaa",
            "color=red",
        ] {
            let err = Filter::parse(Some(bad)).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_filter_holds_a_bounded_number_of_values() {
        let pids = |n: u32| (1..=n).map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        let most = format!("pid={}", pids(MAX_FILTER_VALUES as u32));
        let f = Filter::parse(Some(&most)).unwrap();
        assert!(f.matches(&event(MAX_FILTER_VALUES as u32, "a", 0, Outcome::Fast)));
        assert!(!f.matches(&event(MAX_FILTER_VALUES as u32 + 1, "a", 0, Outcome::Fast)));
        let over = format!("{most}&comm=a");
        let err = Filter::parse(Some(&over)).unwrap_err();
        assert!(err.starts_with("more than 64 filter values"), "{err}");
    }

    /// Bytes of one event's NDJSON line.
    fn line_len(e: &Event) -> u64 {
        serde_json::to_vec(&EventRecord::from(e)).unwrap().len() as u64 + 1
    }

    const UNBOUNDED: Budget = Budget {
        per_client: u64::MAX,
        total: u64::MAX,
    };

    async fn body(stream: impl Stream<Item = Result<Bytes, Infallible>>) -> String {
        let chunks: Vec<Vec<u8>> = stream.map(|b| b.unwrap().to_vec()).collect().await;
        String::from_utf8(chunks.concat()).unwrap()
    }

    #[test]
    fn one_peer_gets_its_share_and_leaving_frees_it() {
        let hub = Hub::new(3, 2, UNBOUNDED);
        let alice = || Some(Peer::Uid(1000));
        let first = hub.subscribe(Filter::default(), Framing::Ndjson, alice());
        let _second = hub.subscribe(Filter::default(), Framing::Ndjson, alice());
        assert_eq!(
            hub.subscribe(Filter::default(), Framing::Ndjson, alice())
                .err(),
            Some(Refused::ClientShare)
        );
        let _bob = hub
            .subscribe(Filter::default(), Framing::Ndjson, Some(Peer::Uid(1001)))
            .unwrap();
        assert_eq!(hub.clients(), 3);
        drop(first);
        assert!(
            hub.subscribe(Filter::default(), Framing::Ndjson, alice())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_slow_client_is_told_what_it_missed() {
        const QUEUED: u64 = 100;
        let one = event(1, "a", 0, Outcome::Unknown);
        let budget = Budget {
            per_client: QUEUED * line_len(&one),
            total: u64::MAX,
        };
        let hub = Hub::new(2, 2, budget);
        let stream = hub
            .subscribe(Filter::parse(Some("pid=1")).unwrap(), Framing::Ndjson, None)
            .unwrap();
        let _other = hub
            .subscribe(Filter::default(), Framing::Sse, None)
            .unwrap();
        assert_eq!(
            hub.subscribe(Filter::default(), Framing::Ndjson, None)
                .err(),
            Some(Refused::Full)
        );
        let events: Vec<Event> = (0..QUEUED + 10)
            .map(|_| one)
            .chain([event(2, "b", 0, Outcome::Unknown)])
            .collect();
        hub.publish(&events);
        hub.ring_dropped(3);
        hub.close();
        let text = body(stream).await;
        let lines: Vec<&str> = text.lines().collect();
        let calls = lines.iter().filter(|l| l.contains("\"tgid\":1")).count();
        assert_eq!(calls as u64, QUEUED);
        assert!(!text.contains("\"tgid\":2"));
        assert!(
            lines.contains(&r#"{"dropped":10,"reason":"slow_client"}"#),
            "{text}"
        );
        assert!(lines.contains(&r#"{"dropped":3,"reason":"ring_buffer"}"#));
        assert_eq!(hub.slow_drops(), 10 + 11);
    }

    #[tokio::test]
    async fn clients_share_the_total_and_leaving_returns_their_bytes() {
        let one = event(1, "a", 0, Outcome::Unknown);
        let len = line_len(&one);
        let hub = Hub::new(
            4,
            4,
            Budget {
                per_client: 100 * len,
                total: 150 * len,
            },
        );
        let first = hub.subscribe(Filter::default(), Framing::Ndjson, None);
        let second = hub
            .subscribe(Filter::default(), Framing::Ndjson, None)
            .unwrap();
        hub.publish(&[one; 100]);
        assert_eq!(hub.queued_bytes(), 150 * len);
        assert_eq!(hub.slow_drops(), 50);
        // The first client leaves without reading: its 100 lines go back to the total.
        drop(first);
        hub.publish(&[]);
        assert_eq!(hub.queued_bytes(), 50 * len);
        hub.close();
        let text = body(second).await;
        assert_eq!(
            text.lines().filter(|l| l.contains("\"tgid\":1")).count(),
            50
        );
        assert!(text.contains(r#"{"dropped":50,"reason":"slow_client"}"#));
        assert_eq!(hub.queued_bytes(), 0);
    }
}

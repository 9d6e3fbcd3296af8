//! Everything the daemon turns away, counted for `/metrics` and logged at most once per
//! interval, so a flood shows without flooding the log.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::sync::watch;

/// Why a connection or request was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No or wrong basic-auth credentials (401).
    Unauthorized,
    /// Per-call data asked for where it is not served (403).
    Forbidden,
    /// A Host that is not a name for the loopback listener (421).
    Misdirected,
    /// Plain HTTP sent to a TLS listener (400).
    PlainHttpToTls,
    /// The TLS handshake failed or timed out.
    TlsHandshake,
    /// An idle connection closed to make room at the connection cap.
    IdleEvicted,
    /// `/events` at its client cap (503).
    EventsFull,
    /// `/events` at one client's share of the cap (503).
    EventsClientShare,
    /// Credentials that found every checker busy and the queue full (503).
    CredentialChecksBusy,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Unauthorized,
        Reason::Forbidden,
        Reason::Misdirected,
        Reason::PlainHttpToTls,
        Reason::TlsHandshake,
        Reason::IdleEvicted,
        Reason::EventsFull,
        Reason::EventsClientShare,
        Reason::CredentialChecksBusy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Unauthorized => "unauthorized",
            Reason::Forbidden => "forbidden",
            Reason::Misdirected => "misdirected",
            Reason::PlainHttpToTls => "plain_http_to_tls",
            Reason::TlsHandshake => "tls_handshake",
            Reason::IdleEvicted => "idle_evicted",
            Reason::EventsFull => "events_full",
            Reason::EventsClientShare => "events_client_share",
            Reason::CredentialChecksBusy => "credential_checks_busy",
        }
    }
}

#[derive(Debug, Default)]
pub struct Rejections {
    counts: [AtomicU64; Reason::ALL.len()],
}

/// How often what was turned away is logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

impl Rejections {
    pub fn count(&self, reason: Reason) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every reason with its count since start.
    pub fn totals(&self) -> [(Reason, u64); Reason::ALL.len()] {
        Reason::ALL.map(|r| (r, self.counts[r as usize].load(Ordering::Relaxed)))
    }

    /// Logs what was turned away in each interval that turned anything away.
    pub async fn log_every_interval(&self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(LOG_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut before = self.totals();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|&s| s) => return,
            }
            let now = self.totals();
            let turned_away: Vec<String> = now
                .iter()
                .zip(&before)
                .filter(|((_, n), (_, b))| n > b)
                .map(|((r, n), (_, b))| format!("{}={}", r.name(), n - b))
                .collect();
            if !turned_away.is_empty() {
                log::warn!(
                    "turned away in the last {}s: {}",
                    LOG_EVERY.as_secs(),
                    turned_away.join(" ")
                );
            }
            before = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let r = Rejections::default();
        r.count(Reason::Unauthorized);
        r.count(Reason::Unauthorized);
        r.count(Reason::EventsClientShare);
        let totals = r.totals();
        assert_eq!(totals[0], (Reason::Unauthorized, 2));
        assert_eq!(totals[7], (Reason::EventsClientShare, 1));
        assert_eq!(totals.iter().map(|(_, n)| n).sum::<u64>(), 3);
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
    }
}

//! Counters, and their Prometheus text exposition (format 0.0.4).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The server's counters; each only ever grows.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Completed WebSocket handshakes: new sessions, resumes and refused resumes.
    pub connections_total: AtomicU64,
    /// Successful resumes, take-overs included.
    pub reconnections_total: AtomicU64,
    /// Events accepted by `POST /events`.
    pub events_published_total: AtomicU64,
    /// Events written to clients, replays included.
    pub events_delivered_total: AtomicU64,
    /// Events written as replay after a resume.
    pub events_replayed_total: AtomicU64,
    /// Events released before they were ever written (overflow or expiry).
    pub events_dropped_total: AtomicU64,
    /// Connections closed for silence.
    pub heartbeat_timeouts_total: AtomicU64,
}

/// The gauges, read at the moment of the scrape.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    /// Sessions with a live connection.
    pub connected: usize,
    /// Sessions without one.
    pub disconnected: usize,
    /// Distinct events held in the event store.
    pub retained_events: usize,
    /// Open WebSocket connections, including ones not yet attached.
    pub connections: usize,
    /// 1 once the data directory could not be written, else 0.
    pub storage_failed: usize,
}

impl Metrics {
    /// The `/metrics` page.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(2048);
        family(
            &mut out,
            "tether_sessions",
            "gauge",
            "Sessions by connection state.",
        );
        let _ = writeln!(
            out,
            "tether_sessions{{state=\"connected\"}} {}",
            gauges.connected
        );
        let _ = writeln!(
            out,
            "tether_sessions{{state=\"disconnected\"}} {}",
            gauges.disconnected
        );
        let gauges = [
            (
                "tether_retained_events",
                "Distinct events held in the event store.",
                gauges.retained_events,
            ),
            (
                "tether_websocket_connections",
                "Open WebSocket connections.",
                gauges.connections,
            ),
            (
                "tether_storage_failed",
                "1 once the data directory could not be written (publishes and new sessions are refused), else 0.",
                gauges.storage_failed,
            ),
        ];
        for (name, help, value) in gauges {
            family(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        let counters = [
            (
                "tether_connections_total",
                "Completed WebSocket handshakes, refused resumes included.",
                &self.connections_total,
            ),
            (
                "tether_reconnections_total",
                "Successful session resumes, take-overs included.",
                &self.reconnections_total,
            ),
            (
                "tether_events_published_total",
                "Events accepted by POST /events.",
                &self.events_published_total,
            ),
            (
                "tether_events_delivered_total",
                "Events written to clients, replays included.",
                &self.events_delivered_total,
            ),
            (
                "tether_events_replayed_total",
                "Events written as replay after a resume.",
                &self.events_replayed_total,
            ),
            (
                "tether_events_dropped_total",
                "Events released before they were ever written to a client.",
                &self.events_dropped_total,
            ),
            (
                "tether_heartbeat_timeouts_total",
                "Connections closed after two silent heartbeat intervals.",
                &self.heartbeat_timeouts_total,
            ),
        ];
        for (name, help, value) in counters {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_has_help_and_type() {
        let text = Metrics::default().render(Gauges::default());
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.iter().any(|t| t == name), "{name} has no TYPE");
            }
        }
        assert!(text.contains("tether_events_dropped_total 0\n"));
    }
}

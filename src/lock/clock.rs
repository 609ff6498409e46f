//! Leader time: a leadership id plus a monotonic clock reading, as TimeLock's `LeaderClock`
//! (`System.nanoTime()` with an arbitrary origin). Lease arithmetic uses only this monotonic
//! clock, so wall-clock jumps change nothing.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use uuid::Uuid;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds on the process's monotonic clock (arbitrary origin).
pub fn now_nanos() -> i64 {
    nanos_at(Instant::now())
}

/// [`now_nanos`] at `instant` (a caller that also keeps the `Instant` reads the clock once).
pub fn nanos_at(instant: Instant) -> i64 {
    i64::try_from(instant.saturating_duration_since(origin()).as_nanos()).unwrap_or(i64::MAX)
}

/// `{"id":"<leadership uuid>","currentTime":<nanos>}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderTime {
    pub id: Uuid,
    pub current_time: i64,
}

/// `{"leaderTime":..,"validity":"PT8S"}`: the client may treat its locks as held until
/// `currentTime + validity` on the leader's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub leader_time: LeaderTime,
    pub validity: IsoDuration,
}

/// A `java.time.Duration` as Jackson writes it with timestamps disabled: ISO-8601, e.g. `PT8S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoDuration(pub Duration);

impl Serialize for IsoDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&iso8601(self.0))
    }
}

/// `PT8S`, `PT0.5S`, `PT20S`, `PT1M30S` (Java's `Duration.toString`).
pub fn iso8601(d: Duration) -> String {
    let total = d.as_secs();
    let (hours, minutes, seconds) = (total / 3600, (total % 3600) / 60, total % 60);
    let nanos = d.subsec_nanos();
    let mut out = String::from("PT");
    if hours > 0 {
        out.push_str(&format!("{hours}H"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}M"));
    }
    if seconds > 0 || nanos > 0 || total == 0 {
        if nanos == 0 {
            out.push_str(&format!("{seconds}S"));
        } else {
            let frac = format!("{nanos:09}");
            out.push_str(&format!("{seconds}.{}S", frac.trim_end_matches('0')));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_java() {
        assert_eq!(iso8601(Duration::from_secs(8)), "PT8S");
        assert_eq!(iso8601(Duration::from_millis(500)), "PT0.5S");
        assert_eq!(iso8601(Duration::from_secs(90)), "PT1M30S");
        assert_eq!(iso8601(Duration::from_secs(3600)), "PT1H");
        assert_eq!(iso8601(Duration::ZERO), "PT0S");
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_nanos();
        let b = now_nanos();
        assert!(b >= a);
    }
}

//! The bodies (`d`) of the payloads whose content the machine acts on:
//! Hello, READY and RATE_LIMITED. Every other field is skipped unread.

use std::time::Duration;

use serde::Deserialize;

/// Hello's `d`.
#[derive(Deserialize)]
pub(super) struct Hello {
    /// Milliseconds.
    heartbeat_interval: u64,
}

impl Hello {
    /// The heartbeat interval, if `d` holds one.
    pub(super) fn interval(d: &str) -> Option<Duration> {
        let hello: Self = serde_json::from_str(d).ok()?;
        Some(Duration::from_millis(hello.heartbeat_interval))
    }
}

/// What the machine takes from READY's `d` (a large object: the rest is
/// skipped).
#[derive(Deserialize)]
pub(super) struct Ready {
    pub(super) session_id: String,
    /// Missing or unusable, resumes go to the gateway URL.
    #[serde(default)]
    pub(super) resume_gateway_url: String,
    /// Only counted (a vector of nothing allocates nothing).
    #[serde(default)]
    pub(super) guilds: Vec<serde::de::IgnoredAny>,
}

impl Ready {
    /// `None` when `d` is not a READY body with a session id.
    pub(super) fn parse(d: &str) -> Option<Self> {
        serde_json::from_str(d).ok()
    }
}

/// RATE_LIMITED's `d` (its `meta` is skipped).
#[derive(Deserialize)]
pub(super) struct RateLimited {
    pub(super) opcode: u8,
    /// Seconds.
    retry_after: f64,
}

impl RateLimited {
    /// `None` unless `d` names an opcode and a wait of zero or more seconds.
    pub(super) fn parse(d: &str) -> Option<(u8, Duration)> {
        let limited: Self = serde_json::from_str(d).ok()?;
        let wait = Duration::try_from_secs_f64(limited.retry_after).ok()?;
        Some((limited.opcode, wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_needs_an_integer_interval() {
        assert_eq!(
            Hello::interval(r#"{"heartbeat_interval":41250,"_trace":["x"]}"#),
            Some(Duration::from_millis(41_250))
        );
        for d in [
            "null",
            "{}",
            r#"{"heartbeat_interval":-1}"#,
            r#"{"heartbeat_interval":"41250"}"#,
            r#"{"heartbeat_interval":41250.5}"#,
        ] {
            assert_eq!(Hello::interval(d), None, "{d}");
        }
    }

    #[test]
    fn ready_reads_the_session_and_skips_the_rest() {
        let ready = Ready::parse(
            r#"{"v":10,"guilds":[{"id":"1","unavailable":true}],"session_id":"s\u0031","resume_gateway_url":"wss://r"}"#,
        )
        .expect("a READY body");
        assert_eq!(
            (ready.session_id.as_str(), ready.resume_gateway_url.as_str()),
            ("s1", "wss://r")
        );
        let ready = Ready::parse(r#"{"session_id":"s"}"#).expect("without a resume URL");
        assert_eq!(ready.resume_gateway_url, "");
        assert!(Ready::parse(r#"{"resume_gateway_url":"wss://r"}"#).is_none());
        assert!(Ready::parse("null").is_none());
    }

    #[test]
    fn rate_limited_needs_an_opcode_and_a_wait_that_is_a_duration() {
        assert_eq!(
            RateLimited::parse(r#"{"opcode":8,"retry_after":1.5,"meta":{"guild_id":"1"}}"#),
            Some((8, Duration::from_millis(1500)))
        );
        for d in [
            r#"{"opcode":8,"retry_after":-1}"#,
            r#"{"opcode":300,"retry_after":1}"#,
            r#"{"opcode":8,"retry_after":1e400}"#,
            r#"{"opcode":8}"#,
        ] {
            assert_eq!(RateLimited::parse(d), None, "{d}");
        }
    }
}

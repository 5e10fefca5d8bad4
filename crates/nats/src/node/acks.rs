//! JetStream's answers to the node's publishes. Each publish's reply
//! subject is a token under the node's own inbox, `<inbox>.<token>`, and
//! every answer comes back on one subscription to `<inbox>.*`.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::{StatusCode, Subject};
use tokio::time::Instant;

use super::publish::{Failure, push_decimal};
use crate::NatsError;

/// How long JetStream has to answer a publish before it is published again.
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// JetStream's error code for a message over the stream's size limit: it
/// can never be stored.
const MESSAGE_TOO_LARGE: u64 = 10054;

/// A publish the node waits to hear about.
pub(super) struct Waiting {
    pub(super) key: u32,
    pub(super) generation: u64,
    pub(super) attempt: u32,
    /// The event's place in its slot's queue (`Outgoing::nth`).
    pub(super) nth: u64,
    pub(super) sent_at: Instant,
}

/// What JetStream said of one publish (or that it said nothing in time).
pub(super) struct Acked {
    pub(super) waiting: Waiting,
    pub(super) outcome: Result<(), Failure>,
}

/// The node's inbox and the publishes waiting for an answer on it.
pub(super) struct Acks {
    pub(super) replies: async_nats::Subscriber,
    book: Book,
}

impl Acks {
    pub(super) async fn subscribe(client: &async_nats::Client) -> Result<Self, NatsError> {
        let inbox = client.new_inbox();
        let replies = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|error| NatsError::jetstream("subscribing to acknowledgements", error))?;
        Ok(Self {
            replies,
            book: Book::new(format!("{inbox}.")),
        })
    }

    /// Whether no publish waits for an answer.
    pub(super) fn is_empty(&self) -> bool {
        self.book.live == 0
    }

    /// Registers a publish about to go out: its token and reply subject.
    pub(super) fn register(&mut self, waiting: Waiting) -> (u64, Subject) {
        self.book.register(waiting)
    }

    /// Forgets a publish that never went out.
    pub(super) fn cancel(&mut self, token: u64) {
        self.book.take(token);
    }

    /// Reads an answer: which publish it is for, and what it says. Anything
    /// else on the inbox (a late answer to a publish given up on, a token
    /// never handed out) is `None`.
    pub(super) fn answer(&mut self, message: &async_nats::Message) -> Option<Acked> {
        let waiting = self.book.answered(message.subject.as_str())?;
        Some(Acked {
            waiting,
            outcome: outcome(message.status, &message.payload),
        })
    }

    /// Gives up on the publishes that waited longer than `timeout`.
    pub(super) fn expired(&mut self, now: Instant, timeout: Duration) -> Vec<Acked> {
        self.book
            .expired(now, timeout)
            .into_iter()
            .map(|waiting| Acked {
                waiting,
                outcome: Err(Failure::Retry(format!(
                    "no acknowledgement within {timeout:?}"
                ))),
            })
            .collect()
    }
}

/// The waiting publishes by token. Tokens count up; `waiting[0]` has token
/// `first`, and an answered one leaves a `None` until those before it are
/// answered too.
struct Book {
    /// `<inbox>.`
    prefix: String,
    first: u64,
    waiting: VecDeque<Option<Waiting>>,
    live: usize,
}

impl Book {
    fn new(prefix: String) -> Self {
        Self {
            prefix,
            first: 0,
            waiting: VecDeque::new(),
            live: 0,
        }
    }

    fn register(&mut self, waiting: Waiting) -> (u64, Subject) {
        let token = self.first + self.waiting.len() as u64;
        self.waiting.push_back(Some(waiting));
        self.live += 1;
        let mut reply = String::with_capacity(self.prefix.len() + 20);
        reply.push_str(&self.prefix);
        push_decimal(&mut reply, token);
        (token, Subject::from(reply))
    }

    /// The publish an answer on `subject` is for, taken out.
    fn answered(&mut self, subject: &str) -> Option<Waiting> {
        let token = subject.strip_prefix(self.prefix.as_str())?.parse().ok()?;
        self.take(token)
    }

    fn take(&mut self, token: u64) -> Option<Waiting> {
        let index = usize::try_from(token.checked_sub(self.first)?).ok()?;
        let waiting = self.waiting.get_mut(index)?.take()?;
        self.live -= 1;
        self.trim();
        Some(waiting)
    }

    fn expired(&mut self, now: Instant, timeout: Duration) -> Vec<Waiting> {
        let mut expired = Vec::new();
        while let Some(Some(front)) = self.waiting.front() {
            if now.duration_since(front.sent_at) < timeout {
                break;
            }
            if let Some(Some(waiting)) = self.waiting.pop_front() {
                self.first += 1;
                self.live -= 1;
                expired.push(waiting);
            }
            self.trim();
        }
        expired
    }

    /// Drops the answered entries at the front.
    fn trim(&mut self) {
        while self.waiting.front().is_some_and(Option::is_none) {
            self.waiting.pop_front();
            self.first += 1;
        }
    }
}

/// What JetStream's answer to a publish says: a `PubAck`
/// (`{"stream":…,"seq":…}`), an error, or a status (no stream listens).
fn outcome(status: Option<StatusCode>, payload: &[u8]) -> Result<(), Failure> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        seq: Option<u64>,
        #[serde(default)]
        error: Option<ApiError>,
    }
    #[derive(serde::Deserialize)]
    struct ApiError {
        #[serde(default)]
        err_code: u64,
        #[serde(default)]
        description: String,
    }
    if let Some(status) = status {
        return Err(Failure::Retry(format!(
            "NATS answered with status {status} (is the events stream there?)"
        )));
    }
    // The usual answer, read without a parser.
    if is_plain_ack(payload) {
        return Ok(());
    }
    match serde_json::from_slice::<Answer>(payload) {
        Ok(Answer {
            error: Some(error), ..
        }) if error.err_code == MESSAGE_TOO_LARGE => Err(Failure::Permanent(error.description)),
        Ok(Answer {
            error: Some(error), ..
        }) => Err(Failure::Retry(format!(
            "JetStream refused it: {} ({})",
            error.description, error.err_code
        ))),
        Ok(Answer { seq: Some(_), .. }) => Ok(()),
        _ => Err(Failure::Retry(
            "JetStream's answer is not an acknowledgement".into(),
        )),
    }
}

/// Whether an answer is a plain `PubAck`: `{"stream":"<name>","seq":<digit>`
/// with no `"error"` after it (a stream name holds no `"`).
fn is_plain_ack(payload: &[u8]) -> bool {
    let Some(rest) = payload.strip_prefix(b"{\"stream\":\"") else {
        return false;
    };
    let Some(quote) = rest.iter().position(|&b| b == b'"') else {
        return false;
    };
    let Some(rest) = rest[quote..].strip_prefix(b"\",\"seq\":") else {
        return false;
    };
    rest.first().is_some_and(u8::is_ascii_digit)
        && !rest.windows(7).any(|window| window == b"\"error\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(nth: u64, sent_at: Instant) -> Waiting {
        Waiting {
            key: 1,
            generation: 0,
            attempt: 0,
            nth,
            sent_at,
        }
    }

    #[test]
    fn answers_out_of_order_each_find_their_publish_once() {
        let now = Instant::now();
        let mut book = Book::new("_INBOX.abc.".into());
        let subjects: Vec<String> = (1..=4)
            .map(|seq| book.register(waiting(seq, now)).1.to_string())
            .collect();
        assert_eq!(subjects[0], "_INBOX.abc.0");
        assert_eq!(subjects[3], "_INBOX.abc.3");
        assert_eq!(book.answered(&subjects[2]).map(|w| w.nth), Some(3));
        assert_eq!(book.answered(&subjects[2]).map(|w| w.nth), None, "twice");
        assert_eq!(book.answered(&subjects[0]).map(|w| w.nth), Some(1));
        // The front is answered: it is dropped, and later tokens still map.
        assert_eq!(book.first, 1);
        assert_eq!(book.answered(&subjects[3]).map(|w| w.nth), Some(4));
        assert_eq!(book.answered(&subjects[1]).map(|w| w.nth), Some(2));
        assert_eq!((book.live, book.waiting.len()), (0, 0));
        // Tokens keep counting after the book empties.
        assert_eq!(book.register(waiting(5, now)).0, 4);
    }

    #[test]
    fn subjects_that_are_not_a_waiting_token_are_ignored() {
        let now = Instant::now();
        let mut book = Book::new("_INBOX.abc.".into());
        book.register(waiting(1, now));
        for subject in [
            "_INBOX.abc.1",
            "_INBOX.abc.-1",
            "_INBOX.abc.99999999999999999999999",
            "_INBOX.abc.",
            "_INBOX.other.0",
            "_INBOX.abc.0.0",
        ] {
            assert!(book.answered(subject).is_none(), "{subject}");
        }
        assert_eq!(book.live, 1);
    }

    #[test]
    fn publishes_unanswered_past_the_timeout_expire_oldest_first() {
        let start = Instant::now();
        let mut book = Book::new("i.".into());
        let (first, _) = book.register(waiting(1, start));
        book.register(waiting(2, start));
        book.register(waiting(3, start + Duration::from_secs(3)));
        book.take(first);
        let expired = book.expired(start + Duration::from_secs(5), Duration::from_secs(5));
        assert_eq!(expired.iter().map(|w| w.nth).collect::<Vec<_>>(), [2]);
        assert_eq!(book.live, 1);
        // A late answer to an expired publish finds nothing.
        assert!(book.answered("i.1").is_none());
        assert_eq!(book.answered("i.2").map(|w| w.nth), Some(3));
        assert!(
            book.expired(start + Duration::from_secs(60), Duration::from_secs(5))
                .is_empty()
        );
    }

    #[test]
    fn a_pub_ack_is_stored_and_errors_say_whether_to_retry() {
        let ok = |payload: &str| outcome(None, payload.as_bytes()).is_ok();
        assert!(ok(r#"{"stream":"shardwire","seq":12}"#));
        assert!(ok(r#"{"stream":"shardwire","seq":12,"duplicate":true}"#));
        // Fields in another order still parse.
        assert!(ok(r#"{"seq":12,"stream":"shardwire"}"#));
        assert!(ok(r#"{ "stream" : "s", "seq" : 1 }"#));
        let retry =
            |payload: &str| matches!(outcome(None, payload.as_bytes()), Err(Failure::Retry(_)));
        assert!(retry(
            r#"{"error":{"code":503,"err_code":10008,"description":"stream not found"}}"#
        ));
        assert!(retry(
            r#"{"stream":"s","seq":1,"error":{"code":500,"err_code":1,"description":"x"}}"#
        ));
        assert!(retry(r#"{"stream":"s"}"#));
        assert!(retry("not json"));
        assert!(retry(""));
        assert!(retry(&"[".repeat(100_000)));
        assert!(matches!(
            outcome(
                None,
                br#"{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}"#
            ),
            Err(Failure::Permanent(_))
        ));
        assert!(matches!(
            outcome(Some(StatusCode::NO_RESPONDERS), b""),
            Err(Failure::Retry(_))
        ));
    }

    #[test]
    fn the_plain_ack_shortcut_takes_only_plain_acks() {
        assert!(is_plain_ack(br#"{"stream":"a","seq":1}"#));
        assert!(!is_plain_ack(br#"{"stream":"a","seq":"1"}"#));
        assert!(!is_plain_ack(br#"{"stream":"a","seq":1,"error":{}}"#));
        assert!(!is_plain_ack(br#"{"stream":"a"#));
        assert!(!is_plain_ack(br#"{"error":{"stream":"a","seq":1}}"#));
    }
}

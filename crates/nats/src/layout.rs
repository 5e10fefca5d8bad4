use crate::NatsError;

/// The header on a new generation's READY and GUILD_CREATEs during a
/// reshard: the shard count it reshards to, so a worker's cache takes them
/// as a refresh, not as guilds joining.
pub const RESHARD_HEADER: &str = "Shardwire-Reshard";

/// The names of one deployment's subjects, stream and KV buckets, all
/// derived from a prefix (`shardwire` by default), so several bots can share
/// a NATS server.
///
/// | what | name |
/// |---|---|
/// | events | subjects `<prefix>.events.<shard>.<EVENT>`, stream `<PREFIX>_EVENTS` |
/// | commands | subject `<prefix>.commands.<shard>` |
/// | identify buckets | KV `<prefix>-identify` |
/// | leases | KV `<prefix>-leases` |
/// | sessions, session starts, shard count | KV `<prefix>-sessions` |
/// | live nodes | KV `<prefix>-nodes` |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            prefix: "shardwire".into(),
        }
    }
}

impl Layout {
    /// Names under `prefix`: letters, digits, `-` and `_`, at most 32.
    ///
    /// # Errors
    ///
    /// [`NatsError::Invalid`] for an empty, long or ill-formed prefix.
    pub fn new(prefix: &str) -> Result<Self, NatsError> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(NatsError::Invalid(format!(
                "the prefix `{prefix}` must be 1 to 32 letters, digits, `-` or `_`"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The events stream's name.
    #[must_use]
    pub fn stream(&self) -> String {
        format!(
            "{}_EVENTS",
            self.prefix.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// The subject commands for `shard` are sent on.
    #[must_use]
    pub fn command_subject(&self, shard: u32) -> String {
        format!("{}.commands.{shard}", self.prefix)
    }

    /// The subject that matches every shard's commands.
    #[must_use]
    pub fn commands_wildcard(&self) -> String {
        format!("{}.commands.*", self.prefix)
    }

    pub(crate) fn bucket(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }
}

/// The subject a dispatch is published on: `<prefix>.events.<shard>.<EVENT>`.
/// An event name that is not a plain subject token (Discord's are
/// `[A-Z_]+`) has its other characters replaced by `_`.
#[must_use]
pub fn event_subject(layout: &Layout, shard: u32, event_type: &str) -> String {
    let mut subject = format!("{}.events.{shard}.", layout.prefix);
    if event_type.is_empty() {
        subject.push_str("UNKNOWN");
    }
    subject.extend(event_type.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            c
        } else {
            '_'
        }
    }));
    subject
}

/// The JetStream message id of a dispatch, `<session>:<seq>`: a resume
/// replays events under the same session and seq, and JetStream drops the
/// copy.
#[must_use]
pub fn message_id(session_id: &str, seq: u64) -> String {
    format!("{session_id}:{seq}")
}

/// Splits a message id back into session and seq: the inverse of
/// [`message_id`].
#[must_use]
pub fn parse_message_id(id: &str) -> Option<(&str, u64)> {
    let (session, seq) = id.rsplit_once(':')?;
    Some((session, seq.parse().ok()?))
}

/// Splits an event subject into shard and event name: the inverse of
/// [`event_subject`].
#[must_use]
pub fn parse_event_subject<'a>(layout: &Layout, subject: &'a str) -> Option<(u32, &'a str)> {
    let rest = subject
        .strip_prefix(layout.prefix.as_str())?
        .strip_prefix(".events.")?;
    let (shard, event) = rest.split_once('.')?;
    Some((shard.parse().ok()?, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_round_trip() {
        let layout = Layout::new("my-bot").unwrap();
        assert_eq!(layout.stream(), "MY_BOT_EVENTS");
        assert_eq!(layout.command_subject(7), "my-bot.commands.7");
        assert_eq!(layout.bucket("leases"), "my-bot-leases");
        let subject = event_subject(&layout, 3, "MESSAGE_CREATE");
        assert_eq!(subject, "my-bot.events.3.MESSAGE_CREATE");
        assert_eq!(
            parse_event_subject(&layout, &subject),
            Some((3, "MESSAGE_CREATE"))
        );
        assert_eq!(
            event_subject(&layout, 0, "A.B *>"),
            "my-bot.events.0.A_B___"
        );
        assert_eq!(event_subject(&layout, 0, ""), "my-bot.events.0.UNKNOWN");
        let id = message_id("abc:def", 42);
        assert_eq!(parse_message_id(&id), Some(("abc:def", 42)));
        assert_eq!(parse_message_id("nothing"), None);
        assert_eq!(parse_event_subject(&layout, "other.events.1.X"), None);
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        use crate::redact_url;
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact_url("nats://bot:s3cret@10.0.0.5:4222"),
            "nats://<redacted>@10.0.0.5:4222"
        );
        assert_eq!(
            redact_url("tls://tok@a:1,tok@b:2"),
            "tls://<redacted>@a:1,<redacted>@b:2"
        );
        assert_eq!(redact_url("user:pw@host:4222"), "<redacted>@host:4222");
        // A cluster's URLs, each with its own scheme and credentials.
        assert_eq!(
            redact_url("nats://a:p@10.0.0.5:4222,nats://10.0.0.6:4222,nats://b:q@x@10.0.0.7:4222"),
            "nats://<redacted>@10.0.0.5:4222,nats://10.0.0.6:4222,nats://<redacted>@10.0.0.7:4222"
        );
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", "a.b", "a b", "a*", &"x".repeat(33)] {
            assert!(Layout::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Layout::default().prefix(), "shardwire");
    }
}

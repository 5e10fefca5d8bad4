/// What a shard needs to resume: exported when a process stops, imported
/// when it starts again, so a restart resumes instead of identifying.
///
/// It serializes as `{"session_id": …, "seq": …, "resume_url": …}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// The session id READY gave.
    pub session_id: String,
    /// The last sequence number received.
    pub seq: u64,
    /// The `resume_gateway_url` READY gave.
    pub resume_url: String,
}

impl Session {
    /// A session, if its fields can be resumed: a non-empty id and a
    /// `ws://` or `wss://` URL.
    ///
    /// # Errors
    ///
    /// [`SessionError`], naming the field that is wrong.
    pub fn new(session_id: String, seq: u64, resume_url: String) -> Result<Self, SessionError> {
        let session = Self {
            session_id,
            seq,
            resume_url,
        };
        session.check()?;
        Ok(session)
    }

    /// Checks an imported session before it is used.
    ///
    /// # Errors
    ///
    /// [`SessionError`], naming the field that is wrong.
    pub fn check(&self) -> Result<(), SessionError> {
        if self.session_id.trim().is_empty() {
            return Err(SessionError::EmptySessionId);
        }
        if !(self.resume_url.starts_with("wss://") || self.resume_url.starts_with("ws://")) {
            return Err(SessionError::ResumeUrlNotWebSocket(self.resume_url.clone()));
        }
        Ok(())
    }
}

/// Why a [`Session`] cannot be resumed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session id is empty (or only white space).
    #[error("the session id is empty")]
    EmptySessionId,
    /// The resume URL is not a `ws://` or `wss://` URL.
    #[error("the resume URL `{0}` is not a ws:// or wss:// URL")]
    ResumeUrlNotWebSocket(String),
}

impl Session {
    /// Moves the session on to a dispatch received or delivered. Dispatches
    /// come in order, but a gateway may repeat one: the seq never goes back.
    pub(crate) fn advance(&mut self, seq: u64) {
        self.seq = self.seq.max(seq);
    }
}

/// A session followed through events in order: a READY starts it, each
/// dispatch moves its seq on. The machine keeps one for what it delivered
/// ([`ShardMachine::session`](crate::ShardMachine::session)) and a
/// [`Shard`](crate::Shard) handle one for what its user took: one rule for
/// both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ResumePoint {
    session: Option<Session>,
    /// The seq of the session's READY: where a consumer that has not seen
    /// the READY yet resumes from.
    ready_seq: u64,
}

impl ResumePoint {
    /// At an imported session, or at none.
    pub(crate) fn new(session: Option<Session>) -> Self {
        let ready_seq = session.as_ref().map_or(0, |session| session.seq);
        Self { session, ready_seq }
    }

    /// A READY: a new session, from its start.
    pub(crate) fn ready(&mut self, session: &Session) {
        self.ready_seq = session.seq;
        self.session = Some(session.clone());
    }

    /// A dispatch of the current session.
    pub(crate) fn dispatch(&mut self, seq: u64) {
        if let Some(session) = &mut self.session {
            session.advance(seq);
        }
    }

    /// Follows one event.
    #[inline]
    pub(crate) fn note(&mut self, event: &crate::ShardEvent) {
        match event {
            crate::ShardEvent::Ready { session } => self.ready(session),
            crate::ShardEvent::Dispatch { seq, .. } => self.dispatch(*seq),
            _ => {}
        }
    }

    /// Becomes a copy of `other`, without reallocating when it follows
    /// the same session (only the seqs move then).
    pub(crate) fn follow(&mut self, other: &Self) {
        match (&mut self.session, &other.session) {
            (Some(mine), Some(theirs))
                if mine.session_id == theirs.session_id && mine.resume_url == theirs.resume_url =>
            {
                mine.seq = theirs.seq;
                self.ready_seq = other.ready_seq;
            }
            _ => self.clone_from(other),
        }
    }

    /// The session ended: there is nothing to resume until the next READY.
    pub(crate) fn forget(&mut self) {
        self.session = None;
    }

    pub(crate) fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Where a consumer that has followed this point's events only up to
    /// `taken` resumes from: `taken`'s session if it is this one, else this
    /// session from its READY (the consumer has not seen that READY yet).
    pub(crate) fn for_consumer_at(&self, taken: &Self) -> Option<Session> {
        let session = self.session.as_ref()?;
        match &taken.session {
            Some(taken) if taken.session_id == session.session_id => Some(taken.clone()),
            _ => Some(Session {
                seq: self.ready_seq,
                ..session.clone()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShardEvent;

    fn session(id: &str, seq: u64) -> Session {
        Session::new(id.into(), seq, "wss://resume.example".into()).expect("a valid session")
    }

    fn dispatch(seq: u64) -> ShardEvent {
        ShardEvent::Dispatch {
            seq,
            event_type: "MESSAGE_CREATE".into(),
            json: "{}".into(),
            event: None,
        }
    }

    #[test]
    fn a_resume_point_follows_ready_and_dispatches_and_never_goes_back() {
        let mut point = ResumePoint::new(None);
        point.note(&dispatch(3));
        assert_eq!(point.session(), None, "a dispatch without a session");
        point.note(&ShardEvent::Ready {
            session: session("a", 1),
        });
        point.note(&dispatch(2));
        point.note(&dispatch(5));
        point.note(&dispatch(4));
        point.note(&ShardEvent::Resumed);
        assert_eq!(point.session(), Some(&session("a", 5)));
        point.forget();
        point.note(&dispatch(6));
        assert_eq!(point.session(), None);
    }

    #[test]
    fn following_a_point_copies_it_whole() {
        let mut delivered = ResumePoint::new(Some(session("a", 1)));
        let mut copy = ResumePoint::new(None);
        copy.follow(&delivered);
        assert_eq!(copy, delivered);
        delivered.dispatch(5);
        copy.follow(&delivered);
        assert_eq!(copy, delivered, "the seq moved");
        delivered.ready(&session("b", 9));
        copy.follow(&delivered);
        assert_eq!(copy, delivered, "another session");
        delivered.forget();
        copy.follow(&delivered);
        assert_eq!(copy, delivered);
    }

    #[test]
    fn a_consumer_behind_a_new_ready_resumes_that_session_from_its_start() {
        let mut delivered = ResumePoint::new(Some(session("a", 7)));
        let mut taken = delivered.clone();
        delivered.note(&dispatch(9));
        assert_eq!(
            delivered.for_consumer_at(&taken),
            Some(session("a", 7)),
            "the consumer took nothing past 7"
        );
        taken.note(&dispatch(8));
        assert_eq!(delivered.for_consumer_at(&taken), Some(session("a", 8)));
        delivered.forget();
        assert_eq!(delivered.for_consumer_at(&taken), None);
        delivered.ready(&session("b", 1));
        delivered.dispatch(4);
        assert_eq!(
            delivered.for_consumer_at(&taken),
            Some(session("b", 1)),
            "b from its READY, not a's seq and not b's last"
        );
    }
}

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

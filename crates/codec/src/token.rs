use std::fmt;

/// A bot token that never shows itself in logs, `Debug` output or errors.
///
/// The token is stored without the `Bot ` prefix that HTTP headers use;
/// [`Token::new`] strips it (and surrounding white space) if present.
/// [`Token::expose`] is the one way to read it, for the Identify payload and
/// the `Authorization` header.
///
/// ```
/// use shardwire_codec::Token;
///
/// let token = Token::new("Bot abc.def.ghi");
/// assert_eq!(token.expose(), "abc.def.ghi");
/// assert_eq!(format!("{token:?}"), "Token(<redacted>)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Box<str>);

impl Token {
    /// Wraps a token, removing white space and a leading `Bot ` prefix.
    pub fn new(token: impl AsRef<str>) -> Self {
        let token = token.as_ref().trim();
        let token = token.strip_prefix("Bot ").unwrap_or(token).trim_start();
        Self(token.into())
    }

    /// The secret itself. Never log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the token is empty (Discord would answer 4004).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl serde::Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

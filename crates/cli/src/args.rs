//! The arguments `tail` and `node` share: the bot's token and intents, and
//! how its shards reach the gateway.

use std::process::ExitCode;

use shardwire_cluster::DEFAULT_API_BASE;
use shardwire_codec::{Compression, Token};
use shardwire_shard::{Endpoint, Scheme};
use twilight_model::gateway::Intents;

use super::{fail, non_privileged_intents};

/// Exit code for invalid arguments, as clap's own usage errors.
pub(super) const EXIT_USAGE: u8 = 2;

/// The bot and how it connects.
#[derive(Debug, clap::Args)]
pub(crate) struct BotArgs {
    /// The bot token (required: this or DISCORD_TOKEN).
    #[arg(
        long,
        env = "DISCORD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = parse_token
    )]
    token: Option<Token>,
    /// The API base; /gateway/bot is appended to it.
    #[arg(long, default_value = DEFAULT_API_BASE, value_name = "URL", value_parser = parse_api_base)]
    api_base: String,
    /// Transport compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::ZlibStream, value_name = "KIND")]
    compression: CompressionArg,
    /// Gateway intents: names like GUILDS,GUILD_MESSAGES (any case, `,` or
    /// `|` between them) or bits (decimal or 0x hex); default: every
    /// non-privileged intent.
    #[arg(long, value_name = "INTENTS", value_parser = parse_intents)]
    intents: Option<Intents>,
}

/// [`BotArgs`], checked: what a cluster or node is configured with.
#[derive(Debug)]
pub(crate) struct Bot {
    pub(crate) token: Token,
    pub(crate) api_base: String,
    pub(crate) compression: Compression,
    pub(crate) intents: Intents,
}

impl BotArgs {
    /// The arguments, or a one-line usage error when there is no token.
    pub(crate) fn check(self) -> Result<Bot, ExitCode> {
        let token = match self.token {
            Some(token) if !token.is_empty() => token,
            Some(_) => {
                return Err(fail(
                    EXIT_USAGE,
                    "the token is empty: pass --token <TOKEN> or set DISCORD_TOKEN",
                ));
            }
            None => {
                return Err(fail(
                    EXIT_USAGE,
                    "no token: pass --token <TOKEN> or set DISCORD_TOKEN",
                ));
            }
        };
        Ok(Bot {
            token,
            api_base: self.api_base,
            compression: self.compression.into(),
            intents: self.intents.unwrap_or_else(non_privileged_intents),
        })
    }
}

/// Transport compression, by its `compress` query value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CompressionArg {
    /// One deflate stream for the whole connection.
    ZlibStream,
    /// One zstd frame for the whole connection.
    ZstdStream,
    /// No transport compression.
    None,
}

impl From<CompressionArg> for Compression {
    fn from(value: CompressionArg) -> Self {
        match value {
            CompressionArg::ZlibStream => Self::ZlibStream,
            CompressionArg::ZstdStream => Self::ZstdStream,
            CompressionArg::None => Self::None,
        }
    }
}

/// A token, trimmed (and without a `Bot ` prefix); `Token` keeps it out of
/// `Debug` output. An empty one is refused by [`BotArgs::check`].
fn parse_token(value: &str) -> Result<Token, String> {
    Ok(Token::new(value))
}

/// An `http://` or `https://` URL with a host, checked before anything is
/// sent to it.
fn parse_api_base(value: &str) -> Result<String, String> {
    Endpoint::parse(value, Scheme::Http).map_err(|error| error.to_string())?;
    Ok(value.to_owned())
}

/// A bot's shard count, or how many of its shards to run: at least 1.
pub(super) fn parse_shard_count(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(0) => Err("a bot has at least 1 shard: pass 1 or more".into()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("`{value}` is not a number of shards")),
    }
}

/// Intent names and numbers, separated by `,` or `|`, in one set.
fn parse_intents(value: &str) -> Result<Intents, String> {
    let mut intents = Intents::empty();
    for part in value.split([',', '|']).map(str::trim) {
        intents |= parse_intent(part)?;
    }
    Ok(intents)
}

/// One intent name (any case) or a number of intent bits.
fn parse_intent(part: &str) -> Result<Intents, String> {
    if part.is_empty() {
        return Err("an intent name is missing (between `,` or `|`)".into());
    }
    if part.starts_with(|c: char| c.is_ascii_digit()) {
        let bits = match part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => part.parse(),
        }
        .map_err(|_| format!("`{part}` is not a number of intent bits"))?;
        return Ok(Intents::from_bits_retain(bits));
    }
    let name = part.to_ascii_uppercase();
    if let Some(intent) = Intents::from_name(&name) {
        return Ok(intent);
    }
    let names = || Intents::all().iter_names().map(|(name, _)| name);
    let closest = names()
        .map(|known| (strsim::jaro(&name, known), known))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(similarity, _)| *similarity > 0.8);
    Err(match closest {
        Some((_, known)) => format!("unknown intent `{part}`; did you mean {known}?"),
        None => format!(
            "unknown intent `{part}`; the intents are {}",
            names().collect::<Vec<_>>().join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_by_name_in_any_case_or_by_bits() {
        let expected = Intents::GUILDS | Intents::GUILD_MESSAGES;
        for value in [
            "GUILDS,GUILD_MESSAGES",
            "guilds|guild_messages",
            " Guilds | GUILD_MESSAGES ",
            "513",
            "0x201",
            "GUILDS,512",
        ] {
            assert_eq!(parse_intents(value), Ok(expected), "{value}");
        }
        assert_eq!(parse_intents("0"), Ok(Intents::empty()));
    }

    #[test]
    fn an_unknown_intent_gets_the_closest_name_or_the_list() {
        let error = parse_intents("GUILDS,guild_mesages").unwrap_err();
        assert!(error.contains("did you mean GUILD_MESSAGES?"), "{error}");
        let error = parse_intents("lots").unwrap_err();
        assert!(
            error.contains("`lots`") && error.contains("GUILDS, GUILD_MEMBERS,"),
            "{error}"
        );
        assert!(parse_intents("GUILDS,").is_err());
        assert!(parse_intents("12x").is_err());
    }

    #[test]
    fn an_api_base_is_an_http_url_with_a_host() {
        assert!(parse_api_base("http://127.0.0.1:9/api/v10").is_ok());
        assert!(parse_api_base(DEFAULT_API_BASE).is_ok());
        for bad in [
            "discord.com/api",
            "ftp://discord.com",
            "http://",
            "not a url",
        ] {
            assert!(parse_api_base(bad).is_err(), "{bad}");
        }
    }
}

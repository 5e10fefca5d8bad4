//! Runnable examples of shardwire; see the `*.rs` files beside this package's
//! manifest and run one with `cargo run -p shardwire-examples --example NAME`.
//!
//! The gateway examples run against Discord when `DISCORD_TOKEN` is set, and
//! against shardwire-sim, started in the same process, when it is not.

use std::time::Duration;

use shardwire::cluster::ClusterConfig;
use shardwire::codec::Token;
use shardwire_sim::{Sim, SimBuilder};
use twilight_model::gateway::Intents;

/// The simulator's identify window in the examples (Discord's is 5 s).
const SIM_IDENTIFY_WINDOW: Duration = Duration::from_secs(1);

/// Where an example connects.
#[derive(Debug)]
pub struct Target {
    /// The bot token.
    pub token: Token,
    /// The REST API base.
    pub api_base: String,
    /// The simulator, when `DISCORD_TOKEN` is unset.
    pub sim: Option<Sim>,
}

impl Target {
    /// Discord with `DISCORD_TOKEN`; else a simulator, shaped by `sim`.
    ///
    /// # Errors
    ///
    /// When the simulator cannot start.
    pub async fn from_env(sim: impl FnOnce(SimBuilder) -> SimBuilder) -> anyhow::Result<Self> {
        match std::env::var("DISCORD_TOKEN") {
            Ok(token) if !token.trim().is_empty() => Ok(Self {
                token: Token::new(token.trim()),
                api_base: shardwire::cluster::DEFAULT_API_BASE.to_owned(),
                sim: None,
            }),
            _ => {
                let sim = sim(Sim::builder().identify_window(SIM_IDENTIFY_WINDOW))
                    .start()
                    .await?;
                Ok(Self {
                    token: Token::new(sim.token()),
                    api_base: sim.api_url().to_owned(),
                    sim: Some(sim),
                })
            }
        }
    }

    /// A cluster configuration for this target.
    #[must_use]
    pub fn cluster_config(&self, intents: Intents) -> ClusterConfig {
        let mut config = ClusterConfig::new(self.token.clone(), intents);
        config.api_base.clone_from(&self.api_base);
        if self.sim.is_some() {
            config.identify_window = SIM_IDENTIFY_WINDOW;
        }
        config
    }

    /// Where it connects, for the first line of output.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.sim {
            Some(sim) => format!(
                "shardwire-sim at {} (set DISCORD_TOKEN to use Discord)",
                sim.api_url()
            ),
            None => "Discord (DISCORD_TOKEN)".to_owned(),
        }
    }
}

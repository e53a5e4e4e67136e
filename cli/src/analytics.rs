//! `flotilla analytics`: operate analytics' projections.
//!
//! `rebuild` opens analytics' own store (the one `FLOTILLA_ANALYTICS__STORE` names,
//! default `<data dir>/analytics/analytics.db`), drops the projections and starts a new
//! generation. Running analytics instances notice within
//! `FLOTILLA_ANALYTICS__GENERATION_CHECK` and replay the stream from the beginning as a
//! new consumer group; `flotilla bus groups` shows its lag falling to zero.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use kit::config::Config;

/// `flotilla analytics …`
#[derive(Debug, Subcommand)]
pub enum Analytics {
    /// Drop the projections and replay the stream from the beginning into new ones.
    Rebuild {
        /// The data directory whose analytics store to use.
        #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
    },
}

/// Runs `flotilla analytics …`.
pub fn analytics(cmd: Analytics) -> ExitCode {
    match cmd {
        Analytics::Rebuild { data_dir } => crate::block_on("analytics rebuild", async move {
            let config = Config::load().merged("data_dir", &data_dir);
            let group = ::analytics::rebuild(&config).await?;
            println!(
                "projections dropped; analytics replays the stream from the beginning as consumer group {group}"
            );
            Ok(())
        }),
    }
}

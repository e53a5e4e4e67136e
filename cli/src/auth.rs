//! `flotilla auth`: operate auth's signing keys.
//!
//! `rotate-key` opens auth's own store (the one `FLOTILLA_AUTH__STORE` names, default
//! `<data dir>/auth/auth.db`) and adds a new active Ed25519 key. The old key stays in the
//! JWKS until every token it signed has expired; running auth instances pick the new
//! key up within `FLOTILLA_AUTH__KEY_RELOAD`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use kit::config::Config;

/// `flotilla auth …`
#[derive(Debug, Subcommand)]
pub enum Auth {
    /// Add a new active signing key; the old one keeps verifying until its tokens expire.
    RotateKey {
        /// The data directory whose auth store to use.
        #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = ".flotilla")]
        data_dir: PathBuf,
    },
}

/// Runs `flotilla auth …`.
pub fn auth(cmd: Auth) -> ExitCode {
    match cmd {
        Auth::RotateKey { data_dir } => crate::block_on("auth rotate-key", async move {
            let config = Config::load().merged("data_dir", &data_dir);
            let kid = ::auth::rotate_key(&config).await?;
            println!(
                "new signing key {kid} is active; the previous one stays in the JWKS until its tokens expire"
            );
            Ok(())
        }),
    }
}

//! The control socket of a running `flotilla up` (`<data dir>/control.sock`, mode
//! 0600): how `flotilla scale` and `flotilla rollout` ask it to change the fleet.
//!
//! One request per connection, one JSON line; the answer is a stream of JSON lines,
//! [`Reply::Progress`] messages and then one [`Reply::Done`] or [`Reply::Failed`]. An
//! operation runs to its end even if the client hangs up, so a cut connection never
//! leaves a rollout half done.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::fleet::{Fleet, RolloutPlan};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// What a client asks `up` to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Run `replicas` instances of `service` (of `version`, if given).
    Scale {
        service: String,
        replicas: usize,
        #[serde(default)]
        version: Option<String>,
        #[serde(default)]
        binary: Option<PathBuf>,
    },
    /// Replace the instances of a service (rolling, or as a canary).
    Rollout(RolloutPlan),
}

/// One line of the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// What is happening now.
    Progress(String),
    /// Finished; what was done.
    Done(String),
    /// Failed (or rolled back); why.
    Failed(String),
}

/// The listening socket; [`Control::close`] removes it.
pub struct Control {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Control {
    /// Stops listening and removes the socket file.
    pub fn close(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The bound socket, not answering yet: clients that connect while `up` starts wait
/// in the backlog and are answered once it is up.
pub struct Bound {
    path: PathBuf,
    listener: UnixListener,
}

impl Bound {
    /// Starts answering requests with `fleet`.
    pub fn serve(self, fleet: Fleet) -> Control {
        let Self { path, listener } = self;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, fleet.clone()));
            }
        });
        Control { path, task }
    }

    /// Gives up the socket (start-up failed).
    pub fn close(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `<data_dir>/control.sock` (replacing one a killed `up` left behind).
pub fn bind(data_dir: &Path) -> anyhow::Result<Bound> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = data_dir.join(SOCKET);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            bail!("another `flotilla up` answers on {}", path.display());
        }
        // Left by an `up` that was killed: nobody listens on it.
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove the stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Bound { path, listener })
}

/// Reads one request, runs it on its own task and streams its replies back.
async fn answer(stream: UnixStream, fleet: Fleet) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read = BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    match read.map_err(anyhow::Error::from).and_then(|_| {
        serde_json::from_str::<Request>(&line).context("the request is not a valid command")
    }) {
        Ok(request) => {
            tokio::spawn(fleet.execute(request, tx));
        }
        Err(e) => {
            let _ = tx.send(Reply::Failed(format!("{e:#}")));
            drop(tx);
        }
    }
    let mut connected = true;
    while let Some(reply) = rx.recv().await {
        if connected {
            let mut text = serde_json::to_string(&reply).unwrap_or_default();
            text.push('\n');
            connected = write.write_all(text.as_bytes()).await.is_ok();
        }
    }
}

/// Sends `request` to the `up` running with `data_dir`, calling `progress` with each
/// progress message; returns the final message, or the failure as an error.
pub async fn call(
    data_dir: &Path,
    request: &Request,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<String> {
    let path = data_dir.join(SOCKET);
    let stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "cannot reach `flotilla up` at {} (is it running with this data directory?)",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Reply>(&line)
            .with_context(|| format!("`flotilla up` answered {line:?}"))?
        {
            Reply::Progress(p) => progress(&p),
            Reply::Done(d) => return Ok(d),
            Reply::Failed(f) => bail!("{f}"),
        }
    }
    bail!("`flotilla up` closed the connection without an answer (did it stop?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_read_as_json_lines() {
        let r: Request =
            serde_json::from_str(r#"{"op":"scale","service":"inventory","replicas":3}"#).unwrap();
        assert!(matches!(r, Request::Scale { replicas: 3, .. }));
        assert!(serde_json::from_str::<Request>(r#"{"op":"explode"}"#).is_err());
        assert!(
            serde_json::from_str::<Request>(
                r#"{"op":"scale","service":"x","replicas":1,"extra":1}"#
            )
            .is_err()
        );
        let line = serde_json::to_string(&Reply::Progress("started".into())).unwrap();
        assert_eq!(line, r#"{"progress":"started"}"#);
    }
}

//! The operator's control socket: `DATA_DIR/control/control.sock`, a Unix socket reachable
//! only by the operator (mode 0600, in a 0700 directory). One JSON request line, one JSON
//! response line. Used by `vaultd rotate-key` (step 4).

use std::path::{Path, PathBuf};

use protocol::Coin;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{info, warn};

use crate::{coordinator::ControlCommand, error::NodeError};

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Rotate a coin processor's messaging key.
    RotateKey {
        /// Coin.
        coin: Coin,
    },
    /// Test-only (feature `fault-injection`): cut the links to `cut` and delay those to
    /// `delayed` by `delay_ms`, replacing earlier faults (empty lists heal every link).
    Links {
        /// PeerIds to cut off.
        #[serde(default)]
        cut: Vec<String>,
        /// PeerIds whose traffic is held back.
        #[serde(default)]
        delayed: Vec<String>,
        /// Delay.
        #[serde(default)]
        delay_ms: u64,
        /// PeerIds whose first gossip message of kind `lose_kind` is lost (as a full send queue
        /// or a dropped connection can lose one); a PeerId listed k times loses k messages.
        #[serde(default)]
        lose_from: Vec<String>,
        /// The general-partition message kind (`PublicAddressAvailable`, ...) to lose once.
        #[serde(default)]
        lose_kind: Option<String>,
    },
    /// Test-only (feature `fault-injection`): a coin's processor takes no command while
    /// `stalled` (its queue fills as a slow processor's would), until released.
    StallProcessor {
        /// Coin.
        coin: Coin,
        /// Stall (true) or release (false).
        stalled: bool,
    },
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Whether it worked.
    pub ok: bool,
    /// The new messaging public key (hex).
    pub pubkey: Option<String>,
    /// Its rotation counter.
    pub seq: Option<u64>,
    /// Why not.
    pub error: Option<String>,
}

/// Where the socket lives: in `DATA_DIR/control/`, a directory private to the operator from
/// its creation, so the socket is never reachable by others, not even between its bind and
/// its chmod.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control").join("control.sock")
}

/// Bind the socket and serve it.
pub fn serve(data_dir: &Path, commands: mpsc::Sender<ControlCommand>) -> Result<(), NodeError> {
    let path = socket_path(data_dir);
    if let Some(dir) = path.parent() {
        crate::permissions::private_subdir(dir)?;
    }
    // A socket left by an earlier run (and the one older versions kept in DATA_DIR itself).
    for stale in [path.clone(), data_dir.join("control.sock")] {
        if stale.exists() {
            std::fs::remove_file(&stale)?;
        }
    }
    let listener = UnixListener::bind(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let commands = commands.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, commands).await {
                            warn!(error = %e, "control connection failed");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    return;
                }
            }
        }
    });
    Ok(())
}

async fn handle(stream: UnixStream, commands: mpsc::Sender<ControlCommand>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(4096);
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(ControlRequest::RotateKey { coin }) => {
            let (tx, rx) = oneshot::channel();
            if commands
                .send(ControlCommand::RotateKey(coin, tx))
                .await
                .is_err()
            {
                fail("node is shutting down".into())
            } else {
                match rx.await {
                    Ok(Ok((pubkey, seq))) => {
                        info!(%coin, seq, "processor messaging key rotated");
                        ControlResponse {
                            ok: true,
                            pubkey: Some(hex::encode(pubkey)),
                            seq: Some(seq),
                            error: None,
                        }
                    }
                    Ok(Err(e)) => fail(e),
                    Err(_) => fail("processor stopped".into()),
                }
            }
        }
        Ok(ControlRequest::Links {
            cut,
            delayed,
            delay_ms,
            lose_from,
            lose_kind,
        }) => links(&commands, &cut, &delayed, delay_ms, &lose_from, lose_kind).await,
        Ok(ControlRequest::StallProcessor { coin, stalled }) => {
            stall(&commands, coin, stalled).await
        }
        Err(e) => fail(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await
}

#[cfg(feature = "fault-injection")]
async fn links(
    commands: &mpsc::Sender<ControlCommand>,
    cut: &[String],
    delayed: &[String],
    delay_ms: u64,
    lose_from: &[String],
    lose_kind: Option<String>,
) -> ControlResponse {
    let (cut, delayed, lose_from) = match (
        parse_peers(cut),
        parse_peers(delayed),
        parse_peers(lose_from),
    ) {
        (Ok(c), Ok(d), Ok(l)) => (c, d, l),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail(e),
    };
    let cmd = ControlCommand::LinkFaults {
        cut,
        delayed,
        delay: std::time::Duration::from_millis(delay_ms),
        lose_from,
        lose_kind,
    };
    match commands.send(cmd).await {
        Ok(()) => ControlResponse {
            ok: true,
            pubkey: None,
            seq: None,
            error: None,
        },
        Err(_) => fail("node is shutting down".into()),
    }
}

/// PeerIds from their text, into a set (cut, delayed) or a list that keeps repeats (lose_from).
#[cfg(feature = "fault-injection")]
fn parse_peers<C: FromIterator<libp2p::PeerId>>(ids: &[String]) -> Result<C, String> {
    ids.iter()
        .map(|s| s.parse().map_err(|e| format!("peer id {s:?}: {e}")))
        .collect()
}

#[cfg(feature = "fault-injection")]
async fn stall(
    commands: &mpsc::Sender<ControlCommand>,
    coin: Coin,
    stalled: bool,
) -> ControlResponse {
    let (reply, answer) = oneshot::channel();
    let cmd = ControlCommand::StallProcessor {
        coin,
        stalled,
        reply,
    };
    if commands.send(cmd).await.is_err() {
        return fail("node is shutting down".into());
    }
    match answer.await {
        Ok(Ok(())) => ControlResponse {
            ok: true,
            pubkey: None,
            seq: None,
            error: None,
        },
        Ok(Err(e)) => fail(e),
        Err(_) => fail("node is shutting down".into()),
    }
}

#[cfg(not(feature = "fault-injection"))]
async fn stall(_: &mpsc::Sender<ControlCommand>, _: Coin, _: bool) -> ControlResponse {
    fail("processor stalls exist only in a test build (feature fault-injection)".into())
}

#[cfg(not(feature = "fault-injection"))]
async fn links(
    _: &mpsc::Sender<ControlCommand>,
    _: &[String],
    _: &[String],
    _: u64,
    _: &[String],
    _: Option<String>,
) -> ControlResponse {
    fail("link faults exist only in a test build (feature fault-injection)".into())
}

fn fail(error: String) -> ControlResponse {
    ControlResponse {
        ok: false,
        pubkey: None,
        seq: None,
        error: Some(error),
    }
}

/// Client side: send one request to a running node.
pub async fn request(data_dir: &Path, req: &ControlRequest) -> Result<ControlResponse, NodeError> {
    let path = socket_path(data_dir);
    let mut stream = UnixStream::connect(&path).await.map_err(|e| {
        NodeError::Config(format!(
            "cannot reach the node at {}: {e} (is it running?)",
            path.display()
        ))
    })?;
    let mut line = serde_json::to_vec(req).map_err(|e| NodeError::Config(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut reply = String::new();
    BufReader::new(stream)
        .take(64 * 1024)
        .read_line(&mut reply)
        .await?;
    serde_json::from_str(&reply).map_err(|e| NodeError::Config(format!("bad control reply: {e}")))
}

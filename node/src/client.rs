//! The operator's side of `POST /sign`: approve one request on several nodes (each with its
//! operator's token) and wait for its outcome. Used by `vaultd sign`, the benchmark and tests.

use std::path::{Path, PathBuf};

use crate::{api, config, http_client, load_definition, token, NodeError};

/// One operator's node and API token: where `vaultd sign` records an approval.
#[derive(Clone, Debug)]
pub struct Approver {
    /// The node's HTTP endpoint, host:port.
    pub api: String,
    /// That operator's API token.
    pub token: token::ApiToken,
}

/// What to sign.
#[derive(Clone, Debug)]
pub struct SignSpec {
    /// Coin.
    pub coin: protocol::Coin,
    /// Messages, hex.
    pub messages: Vec<String>,
    /// The vault's session (`None`: the current one).
    pub session: Option<u32>,
    /// The client's reference, part of the request id.
    pub reference: Option<String>,
}

/// `vaultd sign`: approve the request on each of `approvers` (they must all name the same
/// request id), then poll the first until it is done or failed (or `timeout` passes).
pub async fn sign_and_wait(
    approvers: &[Approver],
    spec: &SignSpec,
    timeout: std::time::Duration,
) -> Result<api::SignResult, NodeError> {
    let first = approvers
        .first()
        .ok_or_else(|| NodeError::Config("no node to approve the request on".into()))?;
    let mut id = None;
    for a in approvers {
        let this = submit_sign(&a.api, &a.token, spec).await?;
        match &id {
            Some(id) if *id != this => {
                return Err(NodeError::Config(format!(
                    "{} named the request {this}, {} named it {id}: are they on the same network and session?",
                    a.api, first.api
                )))
            }
            _ => id = Some(this),
        }
    }
    let id = id.unwrap_or_default();
    wait_sign(
        &first.api,
        &id,
        std::time::Duration::from_millis(200),
        timeout,
    )
    .await
}

/// The approvers of a local cluster (`cluster.json` of `scripts/local-cluster.sh`): the
/// first `count` nodes (default: the network's threshold), each with its data directory's
/// token.
pub fn cluster_approvers(path: &Path, count: Option<usize>) -> Result<Vec<Approver>, NodeError> {
    let text = config::read_capped(path, 1 << 20, "cluster description")
        .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
    let cluster: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
    let count = match count {
        Some(c) => c,
        None => {
            let network = cluster["network"]
                .as_str()
                .ok_or_else(|| NodeError::Config(format!("{}: no \"network\"", path.display())))?;
            let def = load_definition(Path::new(network))?;
            usize::from(def.threshold)
        }
    };
    let nodes = cluster["nodes"].as_array().cloned().unwrap_or_default();
    if nodes.len() < count {
        return Err(NodeError::Config(format!(
            "{}: {} nodes, {count} approvals needed",
            path.display(),
            nodes.len()
        )));
    }
    nodes
        .iter()
        .take(count)
        .map(|n| {
            let (Some(api), Some(dir)) = (n["api"].as_str(), n["data_dir"].as_str()) else {
                return Err(NodeError::Config(format!(
                    "{}: a node without \"api\" or \"data_dir\"",
                    path.display()
                )));
            };
            Ok(Approver {
                api: api.to_string(),
                token: token::read(&token::path(Path::new(dir)))?,
            })
        })
        .collect()
}

/// `POST /sign` to `api` with the operator's `token` (this operator's approval); the request
/// id (hex), or the node's refusal as an error.
pub async fn submit_sign(
    api: &str,
    token: &token::ApiToken,
    spec: &SignSpec,
) -> Result<String, NodeError> {
    let body = serde_json::to_string(&api::SignBody {
        coin: spec.coin.to_string(),
        messages: spec.messages.clone(),
        session: spec.session,
        reference: spec.reference.clone(),
    })
    .map_err(|e| NodeError::Config(e.to_string()))?;
    let (code, answer) = http_client::post_json_authorized(api, "/sign", &body, token).await?;
    let value: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|_| NodeError::Config(format!("{api} answered {code}: {answer}")))?;
    match value.get("id").and_then(|v| v.as_str()) {
        Some(id) => Ok(id.to_string()),
        None => {
            let reason = value
                .get("error")
                .and_then(|v| v.as_str())
                .unwrap_or(&answer);
            Err(NodeError::Config(format!(
                "{api} refused the request ({code}): {reason}"
            )))
        }
    }
}

/// Poll `GET /sign/{id}` every `poll` until the request is done or failed (or `timeout`
/// passes).
pub async fn wait_sign(
    api: &str,
    id: &str,
    poll: std::time::Duration,
    timeout: std::time::Duration,
) -> Result<api::SignResult, NodeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut approvals = None;
    loop {
        let (code, body) = http_client::get(api, &format!("/sign/{id}")).await?;
        if code == 200 {
            let r: api::SignResult = serde_json::from_str(&body)
                .map_err(|e| NodeError::Config(format!("malformed answer: {e}")))?;
            if r.status != "pending" {
                return Ok(r);
            }
            approvals = Some(r.approvals.len());
        }
        if tokio::time::Instant::now() >= deadline {
            let known = match approvals {
                Some(k) => format!(" with {k} approval(s) known to {api}"),
                None => String::new(),
            };
            return Err(NodeError::Config(format!(
                "request {id} still pending after {timeout:?}{known}; it is signed once the vault's threshold of operators approved it"
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

/// `vaultd sign`'s approvers from its `--api`s and the matching `--data-dir`s (each holding
/// its node's `api-token`) or `--token-file`s, in the same order. No `--api`: the default
/// local node.
pub fn approvers_from_args(
    mut apis: Vec<String>,
    data_dirs: Vec<PathBuf>,
    token_files: Vec<PathBuf>,
) -> Result<Vec<Approver>, NodeError> {
    if apis.is_empty() {
        apis.push("127.0.0.1:8555".into());
    }
    let files: Vec<PathBuf> = if token_files.is_empty() {
        data_dirs.iter().map(|d| token::path(d)).collect()
    } else {
        token_files
    };
    if files.len() != apis.len() {
        return Err(NodeError::Config(format!(
            "{} --api but {} tokens: give each node's --data-dir (for DATA_DIR/api-token) or --token-file, in the same order",
            apis.len(),
            files.len()
        )));
    }
    apis.into_iter()
        .zip(files)
        .map(|(api, file)| {
            let token = token::read(&file)
                .map_err(|e| NodeError::Config(format!("the API token for {api}: {e}")))?;
            Ok(Approver { api, token })
        })
        .collect()
}

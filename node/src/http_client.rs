//! A minimal HTTP/1.1 GET/POST client for the CLI and the tests (no TLS, loopback/LAN use).

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use zeroize::Zeroizing;

use crate::{error::NodeError, token::ApiToken};

/// Largest body accepted.
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// GET `path` from `addr` (host:port); returns (status code, body).
pub async fn get(addr: &str, path: &str) -> Result<(u16, String), NodeError> {
    request(addr, "GET", path, None, None).await
}

/// POST a JSON `body` to `path` at `addr` without credentials; returns (status code, body).
pub async fn post_json(addr: &str, path: &str, body: &str) -> Result<(u16, String), NodeError> {
    request(addr, "POST", path, Some(body), None).await
}

/// POST a JSON `body` to `path` at `addr` with the operator's bearer `token`.
pub async fn post_json_authorized(
    addr: &str,
    path: &str,
    body: &str,
    token: &ApiToken,
) -> Result<(u16, String), NodeError> {
    request(addr, "POST", path, Some(body), Some(token)).await
}

async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&ApiToken>,
) -> Result<(u16, String), NodeError> {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut req = Zeroizing::new(format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n"
        ));
        if let Some(t) = token {
            req.push_str("Authorization: Bearer ");
            req.push_str(t.expose());
            req.push_str("\r\n");
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.take(MAX_BODY).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| NodeError::Config(format!("timeout talking to {addr}")))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| NodeError::Config("malformed HTTP response".into()))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| NodeError::Config("malformed status line".into()))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

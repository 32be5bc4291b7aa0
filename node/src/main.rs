//! The `vaultd` binary: parse the command line, set up logging, hand over to the library.

use anyhow::{bail, Context};
use clap::Parser;
use vaultd::cli::{Cli, Command};

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,libp2p_gossipsub=warn,libp2p_kad=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Init { data_dir, secrets } => {
            let secrets = vaultd::secrets_from(
                secrets.password_file.as_deref(),
                secrets.insecure_no_passphrase,
            )?;
            let public = vaultd::init(&data_dir, &secrets)?;
            println!("{}", serde_json::to_string_pretty(&public)?);
        }
        Command::Run {
            data_dir,
            network,
            secrets,
            listen,
            api,
            bootstrap,
            sign_timeout,
            dkg_timeout,
            #[cfg(feature = "fault-injection")]
            sabotage,
        } => {
            let secrets = vaultd::secrets_from(
                secrets.password_file.as_deref(),
                secrets.insecure_no_passphrase,
            )?;
            let cfg = vaultd::RunConfig {
                secrets,
                data_dir,
                network_file: network,
                listen,
                api,
                bootstrap,
                sign_timeout: std::time::Duration::from_secs(sign_timeout),
                dkg_timeout: std::time::Duration::from_secs(dkg_timeout),
                #[cfg(feature = "fault-injection")]
                sabotage,
            };
            vaultd::run(cfg, shutdown_signal())
                .await
                .context("vaultd stopped with an error")?;
        }
        Command::RotateKey { data_dir, coin } => {
            let reply = vaultd::control::request(
                &data_dir,
                &vaultd::control::ControlRequest::RotateKey { coin },
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&reply)?);
            if !reply.ok {
                bail!("rotation refused: {}", reply.error.unwrap_or_default());
            }
        }
        Command::Sign {
            api,
            coin,
            messages,
            timeout,
        } => {
            let result = vaultd::sign_and_wait(
                &api,
                coin,
                &messages,
                std::time::Duration::from_secs(timeout),
            )
            .await?;
            if result.status != "done" {
                bail!(
                    "request {} {}: {}",
                    result.id,
                    result.status,
                    result.reason.unwrap_or_default()
                );
            }
            eprintln!(
                "request {} signed by {}",
                result.id,
                result.signers.join(", ")
            );
            for s in result.signatures {
                println!("{s}");
            }
        }
        Command::Status { api } => {
            let (code, body) = vaultd::http_client::get(&api, "/status").await?;
            if code != 200 {
                bail!("{api} answered {code}");
            }
            let value: serde_json::Value =
                serde_json::from_str(&body).context("status is not JSON")?;
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    Ok(())
}

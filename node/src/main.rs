//! The `vaultd` binary: parse the command line, set up logging, hand over to the library.

use anyhow::{bail, Context};
use clap::Parser;
use vaultd::cli::{Cli, Command, LogFormat};

fn init_logging(format: LogFormat) {
    // gossipsub warns once per message it cannot queue for a peer, with the message in the
    // line: under overload that is hundreds of thousands of lines. vaultd counts those
    // (vaultd_gossip_dropped_total) and warns at most every 10 s instead.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,libp2p_gossipsub=warn,libp2p_gossipsub::behaviour=error,libp2p_kad=warn",
        )
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
}

/// `--config FILE`: its keys become `VAULTD_*` variables unless already set (flags > environment
/// > file > defaults). Runs before any thread exists, so setting variables is sound.
fn apply_config_file() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = vaultd::config::config_path(&args) {
        for (var, value) in vaultd::config::read(&path)? {
            if std::env::var_os(var).is_none() {
                std::env::set_var(var, value);
            }
        }
    }
    Ok(())
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

fn main() -> anyhow::Result<()> {
    apply_config_file()?;
    let cli = Cli::parse();
    init_logging(cli.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { data_dir, secrets } => {
            let secrets = vaultd::secrets_from(
                secrets.password_file.as_deref(),
                secrets.insecure_no_passphrase,
                secrets.insecure_permissions,
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
            api_allow_remote,
            metrics_listen,
            bootstrap,
            external_address,
            sign_policy,
            sign_timeout,
            approval_ttl,
            dkg_timeout,
            print_config,
            #[cfg(feature = "fault-injection")]
            sabotage,
            #[cfg(feature = "fault-injection")]
            bus_capacity,
        } => {
            if print_config {
                let mut effective = toml::toml! {
                    data_dir = (data_dir.display().to_string())
                    network = (network.display().to_string())
                    password_file = (secrets.password_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default())
                    insecure_no_passphrase = (secrets.insecure_no_passphrase)
                    listen = (listen.iter().map(|a| a.to_string()).collect::<Vec<_>>())
                    api = (api.to_string())
                    api_allow_remote = (api_allow_remote)
                    bootstrap = (bootstrap.iter().map(|a| a.to_string()).collect::<Vec<_>>())
                    external_address = (external_address.iter().map(|a| a.to_string()).collect::<Vec<_>>())
                    sign_timeout = (sign_timeout as i64)
                    approval_ttl = (approval_ttl as i64)
                    dkg_timeout = (dkg_timeout as i64)
                };
                if let Some(p) = &sign_policy {
                    effective.insert("sign_policy".into(), p.display().to_string().into());
                }
                if let Some(addr) = metrics_listen {
                    effective.insert("metrics_listen".into(), addr.to_string().into());
                }
                print!("{effective}");
                return Ok(());
            }
            let secrets_args_permissions = secrets.insecure_permissions;
            let secrets = vaultd::secrets_from(
                secrets.password_file.as_deref(),
                secrets.insecure_no_passphrase,
                secrets.insecure_permissions,
            )?;
            let cfg = vaultd::RunConfig {
                secrets,
                insecure_permissions: secrets_args_permissions,
                sign_policy,
                data_dir,
                network_file: network,
                listen,
                api,
                api_allow_remote,
                metrics_listen,
                bootstrap,
                external_addrs: external_address,
                sign_timeout: std::time::Duration::from_secs(sign_timeout),
                approval_ttl: std::time::Duration::from_secs(approval_ttl),
                dkg_timeout: std::time::Duration::from_secs(dkg_timeout),
                #[cfg(feature = "fault-injection")]
                sabotage,
                #[cfg(feature = "fault-injection")]
                bus_capacity: bus_capacity.map(usize::from),
            };
            vaultd::run(cfg, shutdown_signal())
                .await
                .context("vaultd stopped with an error")?;
        }
        Command::RotateToken { data_dir } => {
            let file = vaultd::token::rotate(&data_dir)?;
            eprintln!("wrote a new API token to {}", file.display());
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
            apis,
            data_dirs,
            token_files,
            cluster,
            approvals,
            coin,
            messages,
            reference,
            timeout,
            session,
        } => {
            let approvers = match cluster {
                Some(path) => vaultd::cluster_approvers(&path, approvals)?,
                None => vaultd::client::approvers_from_args(apis, data_dirs, token_files)?,
            };
            let spec = vaultd::SignSpec {
                coin,
                messages,
                session,
                reference,
            };
            let result =
                vaultd::sign_and_wait(&approvers, &spec, std::time::Duration::from_secs(timeout))
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
        Command::Status { api, json } => {
            let (status, value) = fetch_status(&api).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", status.summary());
            }
        }
        Command::Peers { api } => {
            let (status, _) = fetch_status(&api).await?;
            print!("{}", status.peers_table());
        }
    }
    Ok(())
}

async fn fetch_status(api: &str) -> anyhow::Result<(vaultd::status::Status, serde_json::Value)> {
    let (code, body) = vaultd::http_client::get(api, "/status").await?;
    if code != 200 {
        bail!("{api} answered {code}");
    }
    let value: serde_json::Value = serde_json::from_str(&body).context("status is not JSON")?;
    let status = serde_json::from_value(value.clone()).context("unexpected status document")?;
    Ok((status, value))
}

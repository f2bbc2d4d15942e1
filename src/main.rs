//! The `sluis` command: a thin shell over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluis::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "sluis",
    about = "External authorization for API gateways",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the authorization service.
    Serve {
        #[arg(long, short, default_value = "sluis.yaml")]
        config: PathBuf,
    },
    /// Load the config and every policy; print every problem; exit 1 if there is any.
    Validate {
        #[arg(long, short, default_value = "sluis.yaml")]
        config: PathBuf,
    },
    /// Print the version.
    Version,
    /// Development only: sign a token with a local private key (PEM), e.g. the example
    /// issuer's key in `examples/keys/`. Never point this at a production key.
    DevToken {
        /// PEM private key (RSA, EC P-256 or Ed25519).
        #[arg(long)]
        key: PathBuf,
        /// Signature algorithm, e.g. RS256, ES256, EdDSA.
        #[arg(long, default_value = "RS256")]
        alg: String,
        #[arg(long)]
        kid: Option<String>,
        /// Claims as JSON; `iat` and `exp` (1 hour) are added when missing.
        #[arg(long)]
        claims: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version => {
            println!("sluis {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { config } => Ok(validate(&config)),
        Command::Serve { config } => serve(&config),
        Command::DevToken {
            key,
            alg,
            kid,
            claims,
        } => {
            println!("{}", dev_token(&key, &alg, kid, &claims)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match sluis::server::build_engine(&config) {
        Ok(engine) => {
            let set = engine.policies();
            println!(
                "ok: {} policies ({} rules) from {} files, {} issuers; policy set {}",
                set.policies.len(),
                set.policies.iter().map(|p| p.rules.len()).sum::<usize>(),
                set.files.len(),
                config.issuers.len(),
                set.version
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{} error(s)", errors.len());
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let grpc = tokio::net::TcpListener::bind(config.listeners.grpc)
            .await
            .with_context(|| format!("cannot listen on {}", config.listeners.grpc))?;
        let admin = tokio::net::TcpListener::bind(config.listeners.admin)
            .await
            .with_context(|| format!("cannot listen on {}", config.listeners.admin))?;
        tracing::info!(grpc = %config.listeners.grpc, admin = %config.listeners.admin, "sluis listening");
        sluis::server::run(config, grpc, admin, shutdown_signal())
            .await
            .map_err(anyhow::Error::msg)
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: draining in-flight checks");
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.logging.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn dev_token(key: &Path, alg: &str, kid: Option<String>, claims: &str) -> anyhow::Result<String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let alg: Algorithm = alg.parse().context("unknown algorithm")?;
    let pem = std::fs::read(key).with_context(|| format!("cannot read `{}`", key.display()))?;
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem)?,
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem)?,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(&pem),
        _ => EncodingKey::from_rsa_pem(&pem)?,
    };
    let mut claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(claims).context("--claims is not a JSON object")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    claims.entry("iat").or_insert(now.into());
    claims.entry("exp").or_insert((now + 3600).into());
    let mut header = Header::new(alg);
    header.kid = kid;
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

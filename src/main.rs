//! The `sluis` command: a thin shell over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluis::telemetry::Telemetry;
use sluis_config::Config;

/// CEL evaluation allocates many small values per decision; with glibc's allocator, two
/// worker threads doing that contend, and a decision cost up to twice what it costs on one
/// thread (measured with h2load). mimalloc's per-thread heaps remove that contention.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The crate version and the git commit it was built from (`build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SLUIS_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "sluis",
    about = "External authorization for API gateways",
    version = VERSION,
    after_help = "Examples:\n  sluis serve --config examples/config.yaml\n  sluis validate -c examples/config.yaml\n  sluis explain -c examples/config.yaml case.yaml\n\nEach command's --help has its own examples. Documentation: docs/ in the repository."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the authorization service.
    #[command(
        after_help = "Examples:\n  sluis serve --config examples/config.yaml\n  sluis serve -c /etc/sluis/config/config.yaml\n\nSIGHUP reloads the policies and the TLS files; SIGTERM drains in-flight checks and stops."
    )]
    Serve {
        /// The config file (YAML): listeners, issuers, policies, store. Relative paths in it are
        /// relative to the file.
        #[arg(long, short, default_value = "sluis.yaml", value_name = "FILE")]
        config: PathBuf,
    },
    /// Load the config and every policy; print every problem; exit 1 if there is any.
    #[command(after_help = "Example:\n  sluis validate --config examples/config.yaml")]
    Validate {
        /// The config file (YAML): listeners, issuers, policies, store. Relative paths in it are
        /// relative to the file.
        #[arg(long, short, default_value = "sluis.yaml", value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the version.
    Version,
    /// Work with decision logs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Run the policy test suites (`*.test.yaml` beside the policies, or PATHS).
    #[command(
        after_help = "Examples:\n  sluis test --config examples/config.yaml\n  sluis test --coverage -c examples/config.yaml policy/eoverdracht-receiver.test.yaml"
    )]
    Test {
        /// The config file (YAML): listeners, issuers, policies, store. Relative paths in it are
        /// relative to the file.
        #[arg(long, short, default_value = "sluis.yaml", value_name = "FILE")]
        config: PathBuf,
        /// Also list the rules that decided no test case.
        #[arg(long)]
        coverage: bool,
        /// Suite files or directories; default: beside the configured policies.
        paths: Vec<PathBuf>,
    },
    /// Show how a request would be decided, step by step.
    #[command(
        after_help = "Example:\n  sluis explain --config examples/config.yaml case.yaml\n\ncase.yaml:\n  request: { method: GET, path: /eoverdracht/fhir/Patient/456 }\n  token: { issuer: nuts-node, claims: { client_id: \"did:web:receiver.example.org\", scope: eOverdracht-receiver } }"
    )]
    Explain {
        /// The config file (YAML): listeners, issuers, policies, store. Relative paths in it are
        /// relative to the file.
        #[arg(long, short, default_value = "sluis.yaml", value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// A YAML or JSON file with `request` and optionally `token` (as in a test case).
        case: PathBuf,
    },
    /// Replay recorded requests against a candidate policy set and report every decision
    /// that would change. Exits 1 when any would.
    #[command(
        after_help = "Example:\n  sluis replay --config examples/config.yaml --candidate ../policy-next requests.jsonl"
    )]
    Replay {
        /// The config file (YAML): listeners, issuers, policies, store. Relative paths in it are
        /// relative to the file.
        #[arg(long, short, default_value = "sluis.yaml", value_name = "FILE")]
        config: PathBuf,
        /// A candidate policy file or directory (repeatable), replacing the config's `policies`.
        #[arg(long, required = true)]
        candidate: Vec<PathBuf>,
        /// JSON lines, each `{"request": ..., "token": ...}` as in a test case.
        records: PathBuf,
    },
    /// Print, write or check the JSON Schemas of the config, policy and test files.
    #[command(
        after_help = "Examples:\n  sluis schema | less\n  sluis schema --write schema\n  sluis schema --check schema"
    )]
    Schema {
        /// Write the schemas into this directory.
        #[arg(long, conflicts_with = "check")]
        write: Option<PathBuf>,
        /// Check that the schemas in this directory match the code.
        #[arg(long)]
        check: Option<PathBuf>,
    },
    /// Development only: sign a token with a local private key (PEM), e.g. the example
    /// issuer's key in `examples/keys/`. Never point this at a production key.
    #[command(
        after_help = "Example:\n  sluis dev-token --key examples/keys/dev-rsa.pem --kid dev-1 \\\n    --claims '{\"iss\":\"https://nuts.example.org\",\"aud\":\"https://fhir.example.org\",\"sub\":\"me\"}'"
    )]
    DevToken {
        /// PEM private key (RSA, EC P-256 or Ed25519).
        #[arg(long)]
        key: PathBuf,
        /// Signature algorithm, e.g. RS256, ES256, EdDSA.
        #[arg(long, default_value = "RS256")]
        alg: String,
        /// The `kid` header, to pick the key from the issuer's JWKS.
        #[arg(long)]
        kid: Option<String>,
        /// Claims as JSON; `iat` and `exp` (1 hour) are added when missing.
        #[arg(long)]
        claims: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of a decision log (`decision_log.chain: true`). Give rotated
    /// files oldest first (`FILE.2 FILE.1 FILE`). Exits 1 at the first broken line.
    #[command(
        after_help = "Example:\n  sluis audit verify decisions.log.2 decisions.log.1 decisions.log"
    )]
    Verify {
        /// Decision log files, oldest first.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// `writeln!` to standard output, returning the error: `println!` panics when the reader
/// has gone away (`sluis schema | head`).
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

/// Whether `error` is a write to a pipe whose reader has gone away: the reader took what
/// it wanted (`| head`), so the command stops quietly.
fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version => {
            out!("sluis {VERSION}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { config } => Ok(validate(&config)),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => {
            let intact = sluis_core::audit::chain::report(&files, &mut std::io::stdout())?;
            Ok(exit(intact))
        }
        Command::Test {
            config,
            coverage,
            paths,
        } => {
            let config = Config::load(&config)?;
            let passed = runtime()?.block_on(sluis_policy_tools::run_and_report(
                &config,
                &paths,
                coverage,
                &mut std::io::stdout(),
            ))?;
            Ok(exit(passed))
        }
        Command::Explain { config, json, case } => explain(&config, json, &case),
        Command::Replay {
            config,
            candidate,
            records,
        } => replay(&config, candidate, &records),
        Command::Schema { write, check } => match (write, check) {
            (Some(dir), _) => {
                sluis::schema::write(&dir).map_err(anyhow::Error::msg)?;
                out!("wrote the schemas to {}", dir.display());
                Ok(ExitCode::SUCCESS)
            }
            (None, Some(dir)) => match sluis::schema::check(&dir) {
                Ok(()) => {
                    out!("schemas in {} match the code", dir.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    for problem in problems {
                        eprintln!("{problem}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            },
            (None, None) => {
                for (name, schema) in sluis::schema::generate() {
                    out!("# {name}\n{}", serde_json::to_string_pretty(&schema)?);
                }
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Serve { config } => serve(&config),
        Command::DevToken {
            key,
            alg,
            kid,
            claims,
        } => {
            out!("{}", dev_token(&key, &alg, kid, &claims)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn exit(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn offline_engine(config: &Config) -> anyhow::Result<sluis_core::engine::Engine> {
    runtime()?
        .block_on(sluis_policy_tools::offline_engine(config))
        .map_err(|errors| anyhow::anyhow!(errors.join("\n")))
}

fn explain(config: &Path, json: bool, case: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let engine = offline_engine(&config)?;
    let text = std::fs::read_to_string(case)
        .with_context(|| format!("cannot read `{}`", case.display()))?;
    let case: sluis_policy_tools::Case = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("`{}` is not a request case", case.display()))?;
    let mut trace = sluis_core::engine::Trace::default();
    let runtime = runtime()?;
    let decision = runtime.block_on(case.decide(&engine, Some(&mut trace)));
    // With the upstream's answer in the case: what the response rules make of each entry.
    let response = match &decision {
        Ok(decided) => runtime.block_on(case.judge_response(&engine, decided)),
        Err(_) => None,
    };
    if json {
        let mut document = sluis_policy_tools::explanation_json(&decision, &trace);
        if let Some(response) = &response {
            document["answer"] = sluis_policy_tools::response_explanation_json(response);
        }
        out!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        let mut text = sluis_policy_tools::explanation_text(&decision, &trace);
        if let Some(response) = &response {
            text.push_str(&sluis_policy_tools::response_explanation_text(response));
        }
        write!(std::io::stdout().lock(), "{text}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(config: &Path, candidate: Vec<PathBuf>, records: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let mut candidate_config = config.clone();
    // Candidate paths are given on the command line: relative to where we run.
    let cwd = std::env::current_dir()?;
    candidate_config.policies = candidate.into_iter().map(|p| cwd.join(p)).collect();
    let current = offline_engine(&config)?;
    let candidate = offline_engine(&candidate_config)?;
    let records = std::fs::read_to_string(records)
        .with_context(|| format!("cannot read `{}`", records.display()))?;
    let (changes, count) = runtime()?
        .block_on(sluis_policy_tools::replay(&current, &candidate, &records))
        .map_err(anyhow::Error::msg)?;
    if changes.is_empty() {
        out!("no decision changes in {count} requests");
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{} of {count} requests would be decided differently",
        changes.len()
    );
    let mut groups: std::collections::BTreeMap<&str, Vec<&sluis_policy_tools::Change>> =
        Default::default();
    for change in &changes {
        groups
            .entry(change.now_decided_by.as_str())
            .or_default()
            .push(change);
    }
    for (rule, group) in groups {
        out!("\n{rule}: {} request(s)", group.len());
        for change in group {
            out!(
                "  line {}: {}: {} -> {}",
                change.line,
                change.request,
                change.before,
                change.after
            );
        }
    }
    Ok(ExitCode::FAILURE)
}

fn validate(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = |set: &sluis_core::policy::PolicySet| {
        let shadow = set.policies.iter().filter(|p| p.is_shadow()).count();
        format!(
            "{} policies ({} rules) from {} files{}",
            set.policies.len(),
            set.policies.iter().map(|p| p.rules.len()).sum::<usize>(),
            set.files.len(),
            if shadow > 0 {
                format!(", {shadow} in shadow mode")
            } else {
                String::new()
            }
        )
    };
    let enforced = match config.build_engine(std::sync::Arc::default()) {
        Ok(engine) => {
            let set = engine.policies();
            for warning in sluis::reload::load_warnings(&config, &set) {
                eprintln!("warning: {warning}");
            }
            // A reader gone away (`| head`) only shortens the report.
            let _ = writeln!(
                std::io::stdout().lock(),
                "ok: {}, {} issuers; policy set {}",
                summary(&set),
                config.issuers.len(),
                set.version
            );
            true
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{} error(s)", errors.len());
            false
        }
    };
    // The candidate set is checked like the enforced one, and its problems are named as
    // the candidate's.
    let candidate = match config.candidate_config() {
        None => true,
        Some(candidate_config) => {
            match sluis_core::policy::PolicySet::load(&candidate_config.policy_settings()) {
                Ok(set) => {
                    for warning in sluis::reload::load_warnings(&candidate_config, &set) {
                        eprintln!("warning: candidate: {warning}");
                    }
                    let _ = writeln!(
                        std::io::stdout().lock(),
                        "candidate: {}; policy set {}",
                        summary(&set),
                        set.version
                    );
                    true
                }
                Err(errors) => {
                    for error in &errors {
                        eprintln!("candidate: {error}");
                    }
                    eprintln!("candidate: {} error(s)", errors.len());
                    false
                }
            }
        }
    };
    // The listeners' certificates and keys load as `serve` would load them.
    let tls = match sluis::tls::ListenerTls::load(&config) {
        Ok(_) => true,
        Err(errors) => {
            eprintln!("{errors}");
            false
        }
    };
    exit(enforced && candidate && tls)
}

fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The OTLP gRPC exporter's connection runs as tasks on this runtime: build it inside.
    let telemetry = {
        let _entered = runtime.enter();
        config
            .tracing
            .as_ref()
            .map(Telemetry::start)
            .transpose()
            .map_err(anyhow::Error::msg)?
    };
    sluis::telemetry::init_subscriber(&config.logging, telemetry.as_ref());
    if let Some(tracing) = &config.tracing {
        tracing::info!(
            endpoint = %tracing.otlp.endpoint,
            protocol = ?tracing.otlp.protocol,
            sampling_ratio = tracing.sampling_ratio,
            "tracing: exporting decision spans over OTLP"
        );
    }
    runtime.block_on(async {
        let listeners = sluis::server::Bound::bind(&config.listeners)
            .await
            .map_err(anyhow::Error::msg)?;
        tracing::info!(
            grpc = %config.listeners.grpc,
            admin = %config.listeners.admin,
            http = %config.listeners.http.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            "sluis listening"
        );
        let served = sluis::server::run(config, listeners, shutdown_signal()).await;
        // After the listeners have drained, so the last decisions' spans go too.
        if let Some(telemetry) = telemetry {
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        }
        served.map_err(anyhow::Error::msg)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: a SIGTERM that arrives while the server is still
/// starting must drain it too, not kill the process (seen as a flaky reload test).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let terminate = async {
                match terminate {
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

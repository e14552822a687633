//! The `estiba` binary: command line, configuration and logging. It wires the crates
//! together and holds no logic other crates need.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "estiba", version, about = "A self-hosted Amazon ECS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the ECS API on --listen, state under --data-dir.
    Server(ServerArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    /// One SQLite file under --data-dir (durable).
    Sqlite,
    /// In memory only: everything is lost when the server stops.
    Memory,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Address the API listens on.
    #[arg(long, env = "ESTIBA_LISTEN", default_value = "127.0.0.1:4566")]
    listen: SocketAddr,
    /// Where state is kept [default: /var/lib/estiba as root, else $XDG_DATA_HOME/estiba].
    #[arg(long, env = "ESTIBA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log format. The filter comes from ESTIBA_LOG (for example `info` or `estiba_server=debug`).
    #[arg(long, env = "ESTIBA_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Which store backend keeps the state.
    #[arg(long, env = "ESTIBA_STORE", value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// Account id used when the access key id is not a 12-digit account id.
    #[arg(long, env = "ESTIBA_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
    /// Region used when a request carries no SigV4 credential scope.
    #[arg(long, env = "ESTIBA_REGION", default_value = "us-east-1")]
    region: String,
    /// How long a task without health checks must be RUNNING before deployments count it
    /// healthy (ECS: 40s). Shorten it for local testing.
    #[arg(long, env = "ESTIBA_UNCHECKED_TASK_HEALTHY_AFTER", default_value = "40s", value_parser = parse_duration)]
    unchecked_task_healthy_after: Duration,
    /// How long STOPPED tasks stay visible.
    #[arg(long, env = "ESTIBA_STOPPED_TASK_RETENTION", default_value = "1h", value_parser = parse_duration)]
    stopped_task_retention: Duration,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "ESTIBA_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
}

/// `500ms`, `40s`, `5m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration '{s}': use e.g. 500ms, 40s, 5m, 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in '{s}': use ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration '{s}'"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/estiba");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("estiba")
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ESTIBA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => run_server(args),
    }
}

fn run_server(args: ServerArgs) -> Result<()> {
    init_tracing(args.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("estiba").build()?;
    // Everything runs on the runtime's workers; the main thread only waits. (Driving the
    // server from block_on would put a second busy thread on the same cores.)
    rt.block_on(async { tokio::spawn(serve(args)).await? })
}

async fn serve(args: ServerArgs) -> Result<()> {
    use estiba_server::{controller, http, Config, Server};
    let store: Arc<dyn estiba_store::Store> = match args.store {
        StoreKind::Sqlite => {
            let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating data directory {}", dir.display()))?;
            let path = dir.join("state.db");
            Arc::new(estiba_store::SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?)
        }
        StoreKind::Memory => Arc::new(estiba_store::MemStore::new()),
    };
    let config = Config {
        listen: args.listen,
        account_id: args.account_id.clone(),
        default_region: args.region.clone(),
        max_body_bytes: args.max_body_bytes,
        stopped_task_retention: args.stopped_task_retention,
        ..Config::default()
    };
    if args.account_id.len() != 12 || !args.account_id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("--account-id must be 12 digits, got '{}'", args.account_id);
    }
    let server = Server::new(config, store).await.context("loading state")?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "estiba server ready");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let settings = controller::Settings {
        deploy: estiba_core::deploy::Settings {
            unchecked_healthy_after: args.unchecked_task_healthy_after.as_secs_f64(),
        },
        stopped_task_retention: args.stopped_task_retention,
        ..Default::default()
    };
    let controllers = tokio::spawn(controller::run(server.clone(), settings, stop_rx));

    http::serve(server, listener, shutdown_signal()).await?;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = controllers.await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40s").unwrap(), Duration::from_secs(40));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5d").is_err());
    }
}

//! ECS Exec in the binary: `estiba exec` (a client that calls ExecuteCommand, signed with
//! SigV4 when AWS credentials are configured, then speaks the Session Manager data channel
//! on a terminal or on plain pipes) and the server's own node's end of a session
//! ([`LocalNode`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use estiba_api::session::{self as wire, payload, ClientMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

/// The server's own node: a session's stream is an in-process pipe to the agent's
/// [`estiba_agent::exec::serve`].
pub struct LocalNode(pub Arc<estiba_agent::Shared>);

impl estiba_server::exec::LocalNode for LocalNode {
    fn open(&self, target: estiba_core::exec::ExecTarget) -> Pin<Box<dyn estiba_server::exec::NodeStream>> {
        let (a, b) = tokio::io::duplex(64 << 10);
        let shared = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = estiba_agent::exec::serve(&shared, &target, b).await {
                tracing::info!(session = %target.session_id, error = %e, "exec session failed");
            }
        });
        Box::pin(a)
    }
}

#[derive(clap::Args)]
pub struct ExecArgs {
    /// The API endpoint (default: $AWS_ENDPOINT_URL_ECS, $AWS_ENDPOINT_URL, else
    /// http://127.0.0.1:4566).
    #[arg(long)]
    endpoint_url: Option<String>,
    /// The region (default: $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// The container to run the command in (needed when the task has several).
    #[arg(long)]
    container: Option<String>,
    /// The task's cluster (name or ARN).
    cluster: String,
    /// The task (ID or ARN).
    task: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// AWS credentials from the environment, else the shared credentials file's profile.
fn credentials() -> Option<(String, String, Option<String>)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(a), Some(s)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Some((a, s, env("AWS_SESSION_TOKEN")));
    }
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| env("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let mut in_profile = false;
    let (mut a, mut s, mut t) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
        } else if in_profile {
            if let Some((k, v)) = line.split_once('=') {
                let v = Some(v.trim().to_owned());
                match k.trim() {
                    "aws_access_key_id" => a = v,
                    "aws_secret_access_key" => s = v,
                    "aws_session_token" => t = v,
                    _ => {}
                }
            }
        }
    }
    Some((a?, s?, t))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Calls ExecuteCommand; returns the session's stream URL and token.
async fn execute_command(args: &ExecArgs, endpoint: &str, region: &str) -> Result<(String, String)> {
    let body = serde_json::to_vec(&serde_json::json!({
        "cluster": args.cluster,
        "task": args.task,
        "container": args.container,
        "command": estiba_api::session::join_command(&args.command),
        "interactive": true,
    }))?;
    let url = reqwest::Url::parse(endpoint).with_context(|| format!("bad endpoint URL {endpoint}"))?;
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => bail!("bad endpoint URL {endpoint}"),
    };
    let base = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", "AmazonEC2ContainerServiceV20141113.ExecuteCommand"),
    ];
    let mut builder = reqwest::Client::builder();
    if url.scheme() == "https" {
        builder = builder.use_preconfigured_tls((*tls(&[b"http/1.1"])?).clone());
    }
    let client = builder.build().context("building the HTTP client")?;
    let mut req = client.post(url.clone()).body(body.clone());
    for (k, v) in base {
        req = req.header(k, v);
    }
    if let Some((access_key, secret_key, session_token)) = credentials() {
        let signer = estiba_auth::sign::Signer {
            access_key,
            secret_key,
            session_token,
            region: region.to_owned(),
            service: "ecs".into(),
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        for (k, v) in signer.sign("POST", &host, "/", &base, &body, now as i64) {
            req = req.header(k, v);
        }
    }
    let resp = req.send().await.with_context(|| format!("calling ExecuteCommand at {endpoint}"))?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.context("reading ExecuteCommand's answer")?;
    if !status.is_success() {
        let ty = v["__type"].as_str().unwrap_or("Error");
        let ty = ty.rsplit('#').next().unwrap_or(ty);
        let msg = v["message"].as_str().or(v["Message"].as_str()).unwrap_or("");
        eprintln!("An error occurred ({ty}) when calling the ExecuteCommand operation: {msg}");
        std::process::exit(254);
    }
    match (v["session"]["streamUrl"].as_str(), v["session"]["tokenValue"].as_str()) {
        (Some(u), Some(t)) => Ok((u.to_owned(), t.to_owned())),
        _ => bail!("ExecuteCommand answered without a session"),
    }
}

/// The terminal's size, if stdout is one.
fn terminal_size() -> Option<wire::Size> {
    let mut ws = nix::libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize to the pointer, which outlives the call.
    let r = unsafe { nix::libc::ioctl(1, nix::libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(wire::Size { cols: ws.ws_col as u32, rows: ws.ws_row as u32 })
}

/// Raw mode on the terminal of stdin, undone when dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        match nix::sys::termios::tcgetattr(&stdin) {
            Ok(saved) => {
                let mut raw = saved.clone();
                nix::sys::termios::cfmakeraw(&mut raw);
                let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
                RawMode(Some(saved))
            }
            Err(_) => RawMode(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = self.0.take() {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &saved);
        }
    }
}

/// `estiba exec`: runs the command in the task's container; returns its exit code.
pub fn run(args: ExecArgs) -> Result<i32> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let endpoint = args
        .endpoint_url
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_ECS"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| "http://127.0.0.1:4566".into());
    let region = args
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or("us-east-1".into());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let (url, token) = execute_command(&args, &endpoint, &region).await?;
        session(&url, &token).await
    })
}

/// What `https://` and `wss://` trust, as the AWS CLI does: the PEM bundle `AWS_CA_BUNDLE`
/// names, else the system's roots.
fn tls(alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>> {
    let bundle = std::env::var_os("AWS_CA_BUNDLE").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let roots = estiba_tls::trust_roots(bundle.as_deref()).context("reading the trusted certificates")?;
    Ok(estiba_tls::client_config(&roots, alpn)?)
}

async fn session(url: &str, token: &str) -> Result<i32> {
    use std::io::IsTerminal;
    let connector = match url.starts_with("wss://") {
        true => Some(tokio_tungstenite::Connector::Rustls(tls(&[])?)),
        false => None,
    };
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector)
        .await
        .with_context(|| format!("opening the data channel {url}"))?;
    let open = wire::OpenDataChannel {
        message_schema_version: "1.0".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        token_value: token.to_owned(),
        client_id: uuid::Uuid::new_v4().to_string(),
        client_version: env!("CARGO_PKG_VERSION").into(),
    };
    ws.send(Message::Text(serde_json::to_string(&open)?.into())).await?;
    let tty = std::io::stdin().is_terminal();
    let mut raw = None;
    let mut seq: i64 = 0;
    let mut expected: i64 = 0;
    let mut early: BTreeMap<i64, ClientMessage> = BTreeMap::new();
    let mut ready = false;
    let mut stdin = tokio::io::stdin();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 1024];
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut out = std::io::stdout();
    macro_rules! input {
        ($ty:expr, $payload:expr) => {{
            let m = ClientMessage::new(
                wire::INPUT_STREAM_DATA,
                seq,
                $ty,
                $payload,
                now_ms(),
                uuid::Uuid::new_v4().into_bytes(),
            );
            seq += 1;
            ws.send(Message::Binary(m.encode().into())).await?;
        }};
    }
    loop {
        tokio::select! {
            m = ws.next() => {
                let bytes = match m {
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Close(_))) | None => {
                        drop(raw);
                        eprintln!("\nThe data channel closed before the command ended.");
                        return Ok(255);
                    }
                    Some(Err(e)) => {
                        drop(raw);
                        bail!("data channel: {e}");
                    }
                    Some(Ok(_)) => continue,
                };
                let Ok(msg) = ClientMessage::decode(&bytes) else { continue };
                match msg.message_type.as_str() {
                    wire::CHANNEL_CLOSED => {
                        drop(raw);
                        let closed: Option<wire::ChannelClosed> = serde_json::from_slice(&msg.payload).ok();
                        let code = closed.as_ref().and_then(|c| c.exit_code).unwrap_or(0);
                        if let Some(c) = closed.filter(|c| !c.output.is_empty()) {
                            eprintln!("{}", c.output);
                        }
                        let _ = ws.close(None).await;
                        return Ok(code);
                    }
                    wire::OUTPUT_STREAM_DATA => {}
                    _ => continue,
                }
                ws.send(Message::Binary(msg.ack(now_ms(), uuid::Uuid::new_v4().into_bytes()).encode().into())).await?;
                if msg.sequence_number < expected {
                    continue;
                }
                early.insert(msg.sequence_number, msg);
                while let Some(m) = early.remove(&expected) {
                    expected += 1;
                    match m.payload_type {
                        payload::HANDSHAKE_REQUEST => {
                            input!(payload::HANDSHAKE_RESPONSE, wire::handshake_response(env!("CARGO_PKG_VERSION")))
                        }
                        payload::HANDSHAKE_COMPLETE => {
                            ready = true;
                            if tty {
                                raw = Some(RawMode::enter());
                            }
                            let size = terminal_size().unwrap_or(wire::Size { cols: 300, rows: 100 });
                            input!(payload::SIZE, serde_json::to_vec(&size)?);
                        }
                        payload::OUTPUT | payload::STDERR => {
                            out.write_all(&m.payload)?;
                            out.flush()?;
                        }
                        _ => {}
                    }
                }
            }
            n = stdin.read(&mut buf), if ready && stdin_open => {
                match n {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        // End of input: the terminal's end-of-file character.
                        input!(payload::OUTPUT, vec![4]);
                    }
                    Ok(n) => input!(payload::OUTPUT, buf[..n].to_vec()),
                }
            }
            _ = winch.recv(), if ready => {
                if let Some(size) = terminal_size() {
                    input!(payload::SIZE, serde_json::to_vec(&size)?);
                }
            }
        }
    }
}

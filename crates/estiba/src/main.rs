//! The `estiba` binary: command line, configuration and logging. It wires the crates
//! together and holds no logic other crates need.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

mod exec;

/// mimalloc for the server (its many small allocations from several threads contend on
/// glibc's arena locks), the system allocator for supervisors: mimalloc commits megabytes
/// up front, and a supervisor must stay small. The choice is made once per process, at its
/// first allocation, from the environment the agent starts supervisors with
/// (`ESTIBA_SYSTEM_ALLOCATOR=1`), so every block is freed by the allocator that made it.
#[cfg(feature = "mimalloc")]
mod alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicU8, Ordering};

    pub struct Choice;

    static STATE: AtomicU8 = AtomicU8::new(0); // 0: undecided, 1: system, 2: mimalloc

    #[inline]
    fn use_system() -> bool {
        match STATE.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                // SAFETY: getenv with a NUL-terminated name; nothing else runs yet.
                let system = unsafe { !libc_getenv(c"ESTIBA_SYSTEM_ALLOCATOR".as_ptr()).is_null() };
                if !system {
                    tune_mimalloc();
                }
                STATE.store(if system { 1 } else { 2 }, Ordering::Relaxed);
                system
            }
        }
    }

    /// Hand freed memory back to the kernel at once. By default mimalloc commits whole arena
    /// chunks up front and purges freed pages only after a delay; a registry push frees its
    /// buffers on another thread than the one that made them, so the delay let a 1 GB push
    /// hold ~90 MiB resident. With these two options the same push stays near 20 MiB and the
    /// API's throughput does not change (BENCHMARKS.md, "ECR").
    fn tune_mimalloc() {
        // Option numbers from mimalloc v3's `mi_option_e` (the version libmimalloc-sys builds
        // by default); the crate names only the older v2 constants.
        const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
        const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
        // SAFETY: plain option setters, called before mimalloc's first allocation.
        unsafe {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }

    extern "C" {
        #[link_name = "getenv"]
        fn libc_getenv(name: *const std::ffi::c_char) -> *const std::ffi::c_char;
    }

    // SAFETY: every call goes to one allocator for the whole life of the process.
    unsafe impl GlobalAlloc for Choice {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            if use_system() {
                unsafe { System.alloc(l) }
            } else {
                unsafe { mimalloc::MiMalloc.alloc(l) }
            }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            if use_system() {
                unsafe { System.dealloc(p, l) }
            } else {
                unsafe { mimalloc::MiMalloc.dealloc(p, l) }
            }
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            if use_system() {
                unsafe { System.alloc_zeroed(l) }
            } else {
                unsafe { mimalloc::MiMalloc.alloc_zeroed(l) }
            }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            if use_system() {
                unsafe { System.realloc(p, l, n) }
            } else {
                unsafe { mimalloc::MiMalloc.realloc(p, l, n) }
            }
        }
    }
}

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: alloc::Choice = alloc::Choice;

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
    Server(Box<ServerArgs>),
    /// Run tasks on this machine for a server elsewhere (a container instance or Fargate
    /// capacity), through the server's agent API.
    Agent(Box<AgentArgs>),
    /// Print a task's container logs (on this machine).
    Logs(LogsArgs),
    /// Run a command in a task's container (ECS ExecuteCommand), interactively on a
    /// terminal or over plain pipes; exits with the command's exit code.
    Exec(exec::ExecArgs),
    /// Pull an image into this machine's image store, ready for tasks to start from.
    Pull(PullArgs),
    /// Copy every key of a SQLite state into an empty etcd prefix (for `--store etcd`).
    Migrate(MigrateArgs),
    /// Supervise one container (started by the agent; not for direct use).
    #[command(hide = true)]
    Shim {
        /// The container's state directory, holding spec.json.
        state_dir: PathBuf,
    },
    /// Run a command inside a running container (used for health checks).
    #[command(hide = true)]
    ExecIn {
        /// PID of the container's first process.
        #[arg(long)]
        pid: i32,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The servers' URLs, comma-separated (`http://HOST:4566,http://HOST2:4566`): tried in
    /// turn when one does not answer.
    #[arg(long, env = "ESTIBA_SERVER", value_delimiter = ',', required = true)]
    server: Vec<String>,
    /// A join token the servers accept (a line of their --join-tokens file).
    #[arg(long, env = "ESTIBA_JOIN_TOKEN", required = true)]
    join_token: String,
    /// The CA certificates (PEM) that `https://` servers' certificates are verified against,
    /// for the agent API and image pulls from the servers' registries [default: the system's
    /// roots].
    #[arg(long, env = "ESTIBA_SERVER_CA")]
    server_ca: Option<PathBuf>,
    /// Join these clusters as a container instance (names or ARNs, comma-separated).
    #[arg(long, env = "ESTIBA_CLUSTER", value_delimiter = ',')]
    cluster: Vec<String>,
    /// Join as an EXTERNAL instance (ECS Anywhere) rather than EC2.
    #[arg(long)]
    external: bool,
    /// Take FARGATE and FARGATE_SPOT tasks of every cluster.
    #[arg(long)]
    fargate: bool,
    /// A custom attribute of this machine's container instances (`name=value`; repeatable).
    #[arg(long = "attribute", value_parser = parse_attribute)]
    attributes: Vec<(String, String)>,
    /// The address other machines reach this one at (its published ports) [default: the
    /// source address of its route to the first server].
    #[arg(long, env = "ESTIBA_NODE_ADDRESS")]
    address: Option<std::net::Ipv4Addr>,
    /// Where the agent keeps its tasks, images and addresses [default: as the server's].
    #[arg(long, env = "ESTIBA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "ESTIBA_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    node: NodeArgs,
}

fn parse_attribute(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("'{s}' is not name=value")),
    }
}

#[derive(clap::Args)]
struct LogsArgs {
    /// The task id or ARN.
    task: String,
    /// Only this container (default: every container of the task).
    #[arg(long)]
    container: Option<String>,
    /// Keep printing new lines until the containers stop.
    #[arg(short, long)]
    follow: bool,
    /// Prefix each line with its timestamp.
    #[arg(short, long)]
    timestamps: bool,
    #[arg(long, env = "ESTIBA_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct PullArgs {
    /// The image, as a task definition names it (`registry/repository:tag` or `@sha256:...`).
    image: String,
    /// User name for the registry (with --password).
    #[arg(long, env = "ESTIBA_REGISTRY_USERNAME")]
    username: Option<String>,
    #[arg(long, env = "ESTIBA_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Registries reached over plain HTTP besides loopback ones (comma-separated host:port).
    #[arg(long, env = "ESTIBA_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    #[arg(long, env = "ESTIBA_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LocalNode {
    /// On when running as root on Linux.
    Auto,
    On,
    Off,
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
    /// An etcd v3 cluster (--etcd-endpoints), under --etcd-prefix.
    Etcd,
}

/// Where the etcd store is (`--store etcd`, and `estiba migrate`).
#[derive(clap::Args, Clone)]
struct EtcdArgs {
    /// etcd members' client URLs, comma-separated (`http://H1:2379,http://H2:2379`).
    #[arg(long, env = "ESTIBA_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Prefix of every estiba key in etcd, so estiba can share a cluster.
    #[arg(long, env = "ESTIBA_ETCD_PREFIX", default_value = "/estiba/")]
    etcd_prefix: String,
    /// The cluster's --max-txn-ops: larger transactions are refused before they are sent.
    #[arg(long, env = "ESTIBA_ETCD_MAX_TXN_OPS", default_value_t = estiba_store::DEFAULT_MAX_TXN_OPS)]
    etcd_max_txn_ops: usize,
    /// The cluster's --max-request-bytes.
    #[arg(long, env = "ESTIBA_ETCD_MAX_REQUEST_BYTES", default_value_t = estiba_store::DEFAULT_MAX_REQUEST_BYTES)]
    etcd_max_request_bytes: usize,
}

impl EtcdArgs {
    async fn connect(&self) -> Result<estiba_store::EtcdStore> {
        if self.etcd_endpoints.is_empty() {
            bail!("--etcd-endpoints is required with the etcd store");
        }
        let mut config = estiba_store::EtcdConfig::new(self.etcd_endpoints.clone(), self.etcd_prefix.clone());
        config.max_txn_ops = self.etcd_max_txn_ops;
        config.max_request_bytes = self.etcd_max_request_bytes;
        estiba_store::EtcdStore::connect(config)
            .await
            .with_context(|| format!("connecting to etcd at {}", self.etcd_endpoints.join(",")))
    }
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// The SQLite state to copy (a stopped server's `state.db`).
    #[arg(long)]
    from_sqlite: PathBuf,
    #[command(flatten)]
    etcd: EtcdArgs,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Address the API listens on.
    #[arg(long, env = "ESTIBA_LISTEN", default_value = "127.0.0.1:4566")]
    listen: SocketAddr,
    /// `sigv4`: every API request must be signed (SigV4) with a key of --credentials, and
    /// sees only its key's account; `none`: requests are not verified (for a laptop's
    /// loopback) [default: sigv4 when --listen is not a loopback address, else none].
    #[arg(long, env = "ESTIBA_AUTH", value_enum)]
    auth: Option<AuthMode>,
    /// The access keys API requests are verified with (AWS credentials-file form, with
    /// `account` and `access` per profile; see the README), read again when it changes.
    /// Giving it turns --auth sigv4 on.
    #[arg(long, env = "ESTIBA_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// Serve HTTPS on --listen (every API, the registry, the console and the agent API) with
    /// this certificate chain (PEM, leaf first); needs --tls-key [default: plain HTTP].
    #[arg(long, env = "ESTIBA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "ESTIBA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where state is kept [default: /var/lib/estiba as root, else $XDG_DATA_HOME/estiba].
    #[arg(long, env = "ESTIBA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Threads that serve the API and drive the node [default: half the cores, at least one].
    #[arg(long, env = "ESTIBA_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// Log format. The filter comes from ESTIBA_LOG (for example `info` or `estiba_server=debug`).
    #[arg(long, env = "ESTIBA_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Which store backend keeps the state.
    #[arg(long, env = "ESTIBA_STORE", value_enum, default_value = "sqlite")]
    store: StoreKind,
    #[command(flatten)]
    etcd: EtcdArgs,
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
    /// How long deleted (INACTIVE) clusters and services stay visible.
    #[arg(long, env = "ESTIBA_INACTIVE_RETENTION", default_value = "1h", value_parser = parse_duration)]
    inactive_retention: Duration,
    /// How often housekeeping removes expired tasks, clusters and services and finishes
    /// deletions (sooner while work is left over).
    #[arg(long, env = "ESTIBA_HOUSEKEEPING_EVERY", default_value = "10s", value_parser = parse_duration)]
    housekeeping_every: Duration,
    /// Largest request body accepted, in bytes (a full PutLogEvents batch is 1 MiB of
    /// messages before JSON's quoting and members).
    #[arg(long, env = "ESTIBA_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// API requests per second per account, `RATE` or `RATE:BURST` (burst defaults to twice
    /// the rate); over it, AWS's throttling error (ThrottlingException, Throttling,
    /// RequestLimitExceeded), which SDKs retry with backoff. Unlimited when not given.
    #[arg(long, env = "ESTIBA_RATE_LIMIT", value_parser = parse_rate)]
    rate_limit: Option<(u32, u32)>,
    /// The most connections open at once (more wait in the listen queue); kept under the
    /// process's open-file limit.
    #[arg(long, env = "ESTIBA_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Run tasks on this machine (FARGATE and FARGATE_SPOT capacity). Needs root.
    #[arg(long, env = "ESTIBA_LOCAL_NODE", value_enum, default_value = "auto")]
    local_node: LocalNode,
    /// Register this machine as a container instance of these clusters (names in the default
    /// account and region, or ARNs), as the ECS agent does with ECS_CLUSTER, so EC2 tasks
    /// (bridge and host network modes among them) run here.
    #[arg(long, env = "ESTIBA_JOIN_CLUSTER", value_delimiter = ',')]
    join_cluster: Vec<String>,
    /// Serve the ECR API and the OCI registry (`/v2/`) on the listener.
    #[arg(long, env = "ESTIBA_REGISTRY", value_enum, default_value = "on")]
    registry: OnOff,
    /// Also publish every load balancer listener on this host address, at the listener's own
    /// port (e.g. 127.0.0.1, to reach an ALB on port 80 from the host as with LocalStack)
    /// [default: none: only the load balancers' VPC addresses].
    #[arg(long, env = "ESTIBA_LB_HOST_ADDRESS")]
    lb_host_address: Option<std::net::IpAddr>,
    /// `host:port` advertised in repository URIs [default: the listen address].
    #[arg(long, env = "ESTIBA_REGISTRY_HOST")]
    registry_host: Option<String>,
    /// Base URL the other servers sharing the etcd prefix reach this one at (registry blobs,
    /// forwarded CloudWatch Logs and metrics) [default: http://<the listen address>].
    #[arg(long, env = "ESTIBA_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// `open`: anyone may push and pull; `token`: a token from GetAuthorizationToken is required.
    #[arg(long, env = "ESTIBA_REGISTRY_AUTH", value_enum, default_value = "open")]
    registry_auth: RegistryAuth,
    /// Blobs no image uses are removed once they are this old.
    #[arg(long, env = "ESTIBA_REGISTRY_GC_GRACE", default_value = "1h", value_parser = parse_duration)]
    registry_gc_grace: Duration,
    /// How often lifecycle policies run and unused blobs are collected.
    #[arg(long, env = "ESTIBA_REGISTRY_GC_EVERY", default_value = "60s", value_parser = parse_duration)]
    registry_gc_every: Duration,
    /// How often CloudWatch Logs retention is enforced and deleted groups' events removed.
    #[arg(long, env = "ESTIBA_LOGS_RETENTION_EVERY", default_value = "60s", value_parser = parse_duration)]
    logs_retention_every: Duration,
    /// How long one AWS minute of metrics lasts: with 5s, a standard-resolution datapoint,
    /// an alarm's 60-second period and a 60-second scaling cooldown each last 5 s, while
    /// every API keeps AWS's numbers.
    #[arg(long, env = "ESTIBA_METRIC_PERIOD", default_value = "60s", value_parser = parse_duration)]
    metric_period: Duration,
    /// The most disk the log store (CloudWatch Logs' events) may take, in MiB; past it the
    /// oldest events of the whole store go first, with a warning. Unbounded when not given.
    #[arg(long, env = "ESTIBA_LOGS_DISK_BUDGET_MIB")]
    logs_disk_budget_mib: Option<u64>,
    /// Serve the web console's files from this directory (a checkout's
    /// `crates/estiba-server/console`) instead of the copies built into the binary, so a
    /// change to them shows on reload without a rebuild. For working on the console.
    #[arg(long, env = "ESTIBA_CONSOLE_DIR")]
    console_dir: Option<PathBuf>,
    /// The key SSM SecureString values and Secrets Manager secrets are encrypted under
    /// (AES-256-GCM, 32 random bytes in base64), created mode 0600 if missing. Servers that
    /// share an etcd store must all use the same key file [default: <data-dir>/secrets.key;
    /// with --store memory, a key that lives as long as the process].
    #[arg(long, env = "ESTIBA_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Join tokens of `estiba agent`s (one per line, `#` comments), read again when the file
    /// changes: removing a line revokes that token [default: no agent may join].
    #[arg(long, env = "ESTIBA_JOIN_TOKENS")]
    join_tokens: Option<PathBuf>,
    /// A node silent for longer than this counts as lost: no new Fargate task goes to it.
    #[arg(long, env = "ESTIBA_NODE_LEASE", default_value = "30s", value_parser = parse_duration)]
    node_lease: Duration,
    #[command(flatten)]
    node: NodeArgs,
}

/// What a node that runs tasks is given: the server's own node and `estiba agent` alike.
#[derive(clap::Args)]
struct NodeArgs {
    /// This machine's node id [default: its hostname].
    #[arg(long, env = "ESTIBA_NODE_ID")]
    node_id: Option<String>,
    /// The default VPC's CIDR: awsvpc tasks get addresses from its subnets (one sixteenth of
    /// it each, in zones a, b and c).
    #[arg(long, env = "ESTIBA_VPC_CIDR", default_value = estiba_core::vpc::DEFAULT_CIDR)]
    vpc_cidr: ipnet::Ipv4Net,
    /// The network of bridge-mode tasks.
    #[arg(long, env = "ESTIBA_BRIDGE_CIDR", default_value = "172.30.0.0/16")]
    bridge_cidr: ipnet::Ipv4Net,
    /// How containers start: `native` (built in) or an OCI runtime binary (`runc`, a path).
    #[arg(long, env = "ESTIBA_CONTAINER_RUNTIME", default_value = "native")]
    container_runtime: String,
    /// Supervisors kept parked, each with a process already in a cgroup of its own, so that a
    /// container starts without waiting for the kernel's cgroup migration (cgroup v1 and
    /// hybrid hosts, built-in runtime; 0 turns them off).
    #[arg(long, env = "ESTIBA_WARM_SUPERVISORS", default_value_t = 4)]
    warm_supervisors: usize,
    /// Network namespaces kept made ahead of time (loopback up), so that a task's start does
    /// not wait for the kernel to make one (0 turns them off).
    #[arg(long, env = "ESTIBA_WARM_NAMESPACES", default_value_t = 4)]
    warm_namespaces: usize,
    /// Below this much available memory the node refuses new tasks (RESOURCE:MEMORY).
    #[arg(long, env = "ESTIBA_MEMORY_FLOOR", default_value = "256MiB", value_parser = parse_size)]
    memory_floor: u64,
    /// Registries reached over plain HTTP besides loopback ones (comma-separated host:port).
    #[arg(long, env = "ESTIBA_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// Where containers' `environmentFiles` are read from (an S3 ARN `arn:aws:s3:::bucket/key`
    /// is `<dir>/bucket/key`) [default: none; task definitions with environment files are refused].
    #[arg(long, env = "ESTIBA_ENVIRONMENT_FILES_DIR")]
    environment_files_dir: Option<PathBuf>,
    /// Run the VPC resolver on this node (at the VPC's base address plus two, 172.31.0.2 by
    /// default): task networks resolve Cloud Map names and private DNS names through it, and
    /// everything else through the host's name servers.
    #[arg(long, env = "ESTIBA_VPC_RESOLVER", value_enum, default_value = "on")]
    vpc_resolver: OnOff,
    /// Run load balancers' listeners on this node, at their VPC addresses (ELBv2's data plane).
    #[arg(long, env = "ESTIBA_LOAD_BALANCERS", value_enum, default_value = "on")]
    load_balancers: OnOff,
    /// How often the node samples its running tasks' cgroups (CPU, memory, network, block
    /// I/O) for CloudWatch's AWS/ECS and ECS/ContainerInsights metrics.
    #[arg(long, env = "ESTIBA_METRICS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    metrics_interval: Duration,
    /// `remap`: containers run in a user namespace where their root is an unprivileged host
    /// uid (`--userns-range`), as Docker's userns-remap; privileged and host-network
    /// containers keep the host's (built-in executor only).
    #[arg(long, env = "ESTIBA_USERNS", value_enum, default_value = "off")]
    userns: Userns,
    /// With `--userns remap`: the host uids and gids (`FIRST:COUNT`) containers' ids
    /// `0..COUNT` are, which no host user should own.
    #[arg(long, env = "ESTIBA_USERNS_RANGE", default_value = "1000000000:65536", value_parser = parse_id_range)]
    userns_range: (u32, u32),
}

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
enum Userns {
    Off,
    Remap,
}

/// `FIRST:COUNT` of `--userns-range`.
fn parse_id_range(s: &str) -> Result<(u32, u32), String> {
    let (first, count) = s.split_once(':').ok_or("expected FIRST:COUNT, such as 1000000000:65536")?;
    let first: u32 = first.parse().map_err(|_| format!("{first} is not a uid"))?;
    let count: u32 = count.parse().map_err(|_| format!("{count} is not a count"))?;
    if first == 0 || count == 0 || first.checked_add(count).is_none() {
        return Err(format!("{s}: the range must start above 0, hold at least one id and end below 2^32"));
    }
    Ok((first, count))
}

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
enum AuthMode {
    Sigv4,
    None,
}

/// The credentials file requests are verified with, from --auth, --credentials and --listen.
fn credentials_file(args: &ServerArgs) -> anyhow::Result<Option<PathBuf>> {
    let loopback = args.listen.ip().is_loopback();
    let mode =
        args.auth.unwrap_or(if loopback && args.credentials.is_none() { AuthMode::None } else { AuthMode::Sigv4 });
    match (mode, &args.credentials) {
        (AuthMode::Sigv4, Some(f)) => Ok(Some(f.clone())),
        (AuthMode::Sigv4, None) => anyhow::bail!(
            "--auth sigv4{} needs --credentials FILE (the access keys and their accounts); \
             give --auth none to serve {} without verifying requests",
            if args.auth.is_none() { " (the default off loopback)" } else { "" },
            args.listen
        ),
        (AuthMode::None, creds) => {
            if creds.is_some() {
                anyhow::bail!("--credentials is given with --auth none: drop one of them");
            }
            if !loopback {
                tracing::warn!(
                    listen = %args.listen,
                    "!!! --auth none on a non-loopback address: ANYONE who reaches this port can run containers \
                     and read every account's resources. Give --credentials FILE to require signed requests. !!!"
                );
            }
            Ok(None)
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
enum RegistryAuth {
    Open,
    Token,
}

/// `512`, `256MiB`, `2GiB`, `1G`: bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let i = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..i].parse().map_err(|_| format!("invalid size '{s}'"))?;
    let mult = match t[i..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("invalid size unit '{other}': use KiB, MiB or GiB")),
    };
    Ok(n * mult)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "local".into())
}

/// `500ms`, `40s`, `5m`, `1h`, or a bare number of seconds.
/// `RATE` or `RATE:BURST` requests per second (burst: twice the rate when not given).
fn parse_rate(s: &str) -> Result<(u32, u32), String> {
    let (rate, burst) = s.split_once(':').map_or((s, None), |(r, b)| (r, Some(b)));
    let rate: u32 = rate.trim().parse().map_err(|_| format!("{rate:?} is not a number of requests per second"))?;
    if rate == 0 {
        return Err("the rate must be at least 1 request per second".into());
    }
    let burst = match burst {
        Some(b) => b.trim().parse().map_err(|_| format!("{b:?} is not a burst size"))?,
        None => rate.saturating_mul(2),
    };
    Ok((rate, burst.max(1)))
}

/// Raises this process's soft limit on open files to its hard limit (never above it: the
/// host's hard limit stands) and returns the soft limit it then has. Connections, stores and
/// tasks' pipes all take files; containers get their own limits from their tasks.
fn raise_open_files_limit() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() { hard } else { soft };
    usize::try_from(soft).unwrap_or(usize::MAX)
}

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
    // Supervisors start by the hundred and live as long as their containers: they skip the
    // CLI parser (which builds the whole command definition) and touch as little as they can.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).take(3).collect();
    if argv.first().is_some_and(|a| a == "shim") && argv.len() == 2 {
        std::process::exit(estiba_runtime::container::shim::main(&argv[1..]));
    }
    let cli = Cli::parse();

    match cli.command {
        Command::Server(args) => run_server(*args),
        Command::Agent(args) => run_agent(*args),
        Command::Logs(args) => logs(args),
        Command::Exec(args) => std::process::exit(exec::run(args)?),
        Command::Pull(args) => pull(args),
        Command::Migrate(args) => migrate(args),
        Command::Shim { state_dir } => std::process::exit(estiba_runtime::container::shim::run(&state_dir)),
        Command::ExecIn { pid, user, cwd, args } => {
            match estiba_runtime::container::exec::exec_in(pid, &args, user.as_deref(), cwd.as_deref()) {
                Ok(code) => std::process::exit(code),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(126)
                }
            }
        }
    }
}

fn run_server(args: ServerArgs) -> Result<()> {
    init_tracing(args.log_format);
    // Half the cores by default: estiba shares its machine with the containers it runs (and,
    // in development and CI, with its clients). On the 2-core reference machine one worker
    // answered reads with a p99 of 0.2-1.0 ms where two, contending with the client for both
    // cores, reached 1.5-2.7 ms, at the same throughput (BENCHMARKS.md, control plane API).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.worker_threads.map_or((cores / 2).max(1), usize::from);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("estiba")
        .build()?;
    // Everything runs on the runtime's workers; the main thread only waits. (Driving the
    // server from block_on would put a second busy thread on the same cores.)
    rt.block_on(async { tokio::spawn(serve(args)).await? })
}

async fn serve(args: ServerArgs) -> Result<()> {
    use estiba_server::{controller, http, Config, Server};
    // With etcd, several servers may share the state: they elect one leader to run the
    // controllers (`lead`).
    let mut etcd: Option<Arc<estiba_store::EtcdStore>> = None;
    let store: Arc<dyn estiba_store::Store> = match args.store {
        StoreKind::Sqlite => {
            let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating data directory {}", dir.display()))?;
            let path = dir.join("state.db");
            Arc::new(estiba_store::SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?)
        }
        StoreKind::Memory => Arc::new(estiba_store::MemStore::new()),
        StoreKind::Etcd => {
            let e = Arc::new(args.etcd.connect().await?);
            etcd = Some(e.clone());
            e
        }
    };
    let credentials_file = credentials_file(&args)?;
    let config = Config {
        listen: args.listen,
        account_id: args.account_id.clone(),
        default_region: args.region.clone(),
        max_body_bytes: args.max_body_bytes,
        rate_limit: args.rate_limit,
        max_connections: args.max_connections.min(raise_open_files_limit() / 2).max(16),
        stopped_task_retention: args.stopped_task_retention,
        registry_dir: (args.registry == OnOff::On)
            .then(|| args.data_dir.clone().unwrap_or_else(default_data_dir).join("registry")),
        registry_host: args.registry_host.clone(),
        // With verified requests, the registry takes only GetAuthorizationToken's tokens.
        registry_auth: match (args.registry_auth, &credentials_file) {
            (RegistryAuth::Token, _) | (_, Some(_)) => estiba_server::registry::Auth::Token,
            (RegistryAuth::Open, None) => estiba_server::registry::Auth::Open,
        },
        credentials_file: credentials_file.clone(),
        registry_gc_grace: args.registry_gc_grace,
        environment_files_dir: args.node.environment_files_dir.clone(),
        lb_host_address: args.lb_host_address,
        // Logs and metrics stay on this machine's disk with the etcd store too.
        logs_dir: matches!(args.store, StoreKind::Sqlite | StoreKind::Etcd)
            .then(|| args.data_dir.clone().unwrap_or_else(default_data_dir).join("logs")),
        logs_disk_budget: args.logs_disk_budget_mib.map(|m| m.saturating_mul(1 << 20)),
        metrics_dir: matches!(args.store, StoreKind::Sqlite | StoreKind::Etcd)
            .then(|| args.data_dir.clone().unwrap_or_else(default_data_dir).join("metrics")),
        metric_period: args.metric_period,
        console_dir: args.console_dir.clone(),
        secrets_key_file: args.secrets_key_file.clone().or_else(|| {
            matches!(args.store, StoreKind::Sqlite | StoreKind::Etcd)
                .then(|| args.data_dir.clone().unwrap_or_else(default_data_dir).join("secrets.key"))
        }),
        ..Config::default()
    };
    if args.metric_period < Duration::from_secs(1) {
        bail!("--metric-period must be at least 1s, got {:?}", args.metric_period);
    }
    if args.account_id.len() != 12 || !args.account_id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("--account-id must be 12 digits, got '{}'", args.account_id);
    }
    if args.node.vpc_cidr.contains(&args.node.bridge_cidr.network())
        || args.node.bridge_cidr.contains(&args.node.vpc_cidr.network())
    {
        bail!(
            "--vpc-cidr {} and --bridge-cidr {} overlap: choose networks apart",
            args.node.vpc_cidr,
            args.node.bridge_cidr
        );
    }
    if args.node.vpc_cidr.prefix_len() > 24 || args.node.bridge_cidr.prefix_len() > 28 {
        bail!("--vpc-cidr must be a /24 or larger and --bridge-cidr a /28 or larger");
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let run_tasks = match args.local_node {
        LocalNode::On => true,
        LocalNode::Off => false,
        LocalNode::Auto => is_root(),
    };
    let node_id = args.node.node_id.clone().unwrap_or_else(hostname);
    if run_tasks && !estiba_core::keys::valid_node_id(&node_id) {
        bail!("the node id '{node_id}' must not be empty nor hold '/' (set it with --node-id)");
    }
    let config = Config {
        local_node: run_tasks.then(|| node_id.clone()),
        node_lease: args.node_lease,
        join_tokens_file: args.join_tokens.clone(),
        vpc_cidr: args.node.vpc_cidr.trunc(),
        ..config
    };
    // The certificate is read before anything starts, so a bad file stops the server at once.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let (chain, key) = estiba_tls::load_certified_key(cert, key).context("--tls-cert/--tls-key")?;
            Some(estiba_tls::server_config(chain, key, &[b"http/1.1"]).context("--tls-cert/--tls-key")?)
        }
        _ => None,
    };
    let server = Server::new(config, store.clone()).await.context("loading state")?;
    if let Some(e) = &etcd {
        server.liveness.use_etcd(e.clone());
    }
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, tls = tls.is_some(), "estiba server ready");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let settings = controller::Settings {
        deploy: estiba_core::deploy::Settings {
            unchecked_healthy_after: args.unchecked_task_healthy_after.as_secs_f64(),
        },
        stopped_task_retention: args.stopped_task_retention,
        inactive_retention: args.inactive_retention,
        housekeeping_every: args.housekeeping_every,
        registry_housekeeping_every: args.registry_gc_every,
        logs_housekeeping_every: args.logs_retention_every,
        ..Default::default()
    };
    // The URL this server campaigns with: the other servers find it (and the leader) there.
    let advertise = match &args.advertise_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => format!("http://{}", listener.local_addr()?),
    };
    if let Some(e) = &etcd {
        if args.join_tokens.is_none() {
            tracing::warn!(
                "without --join-tokens, servers sharing this etcd prefix cannot fetch registry blobs from each other \
                 nor replicate logs and metrics, and a follower's nodes cannot ship them to the leader"
            );
        }
        tokio::spawn(estiba_server::peers::track(
            server.clone(),
            e.clone(),
            ELECTION,
            advertise.clone(),
            stop_rx.clone(),
        ));
    }
    let controllers = tokio::spawn(lead(etcd, server.clone(), settings, stop_rx.clone(), advertise));
    // What nodes serve is published by every server, leader or not.
    tokio::spawn(estiba_server::controller::run_everywhere(server.clone(), stop_rx.clone()));
    // Target health goes to the server, cgroup samples and load balancer counters to the
    // metric ingest, the rest is only counted: for the local node and remote agents alike.
    let ingest = estiba_server::metric_ingest::MetricIngest::start(
        server.clone(),
        args.node.metrics_interval + Duration::from_secs(1),
        stop_rx.clone(),
    );
    let telemetry = Arc::new(ServerSink { server: server.clone(), ingest, rest: Default::default() });
    // Container logs of the awslogs driver go to the server's log store.
    let log_ingest: Arc<dyn estiba_core::telemetry::LogIngest> =
        Arc::new(estiba_server::log_ingest::ServerLogIngest::new(server.clone()));
    let _ = server
        .agent_sinks
        .set(estiba_server::agent_api::Sinks { telemetry: telemetry.clone(), logs: log_ingest.clone() });
    let agent = if run_tasks {
        // This server's own registry speaks plain HTTP.
        let mut insecure = args.node.insecure_registries.clone();
        insecure.extend(server.registry.as_ref().map(|r| r.host.clone()));
        let images = estiba_runtime::image::ImageStore::open(data_dir.join("images"), insecure)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(reg) = &server.registry {
            images.set_local(Arc::new(OwnRegistry { server: server.clone(), registry: reg.clone() }));
        }
        // What the server publishes for every node: the resolver's zone, Service Connect's
        // table, the load balancers.
        let published = estiba_agent::control::Published {
            dns_zone: (args.node.vpc_resolver == OnOff::On).then(|| server.dns.subscribe()),
            service_connect: Some(server.connect.subscribe()),
            load_balancers: (args.node.load_balancers == OnOff::On).then(|| server.lb.subscribe()),
            routes: Some(server.routes.subscribe()),
        };
        let cp = estiba_agent::control::StoreControl::start_with(
            store.clone(),
            node_id.clone(),
            telemetry,
            published,
            Some(log_ingest),
            Some(Arc::new(estiba_server::netblocks::ServerBlocks(server.clone()))),
            Some(Arc::new(estiba_server::liveness::ServerReports(server.clone()))),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Tasks' secrets are resolved by the server, never read from the store by the agent.
        cp.set_secrets(Arc::new(estiba_server::task_secrets::ServerSecrets(server.clone())));
        // Other machines reach this one at the address the server listens on, when it is one.
        let address = match args.listen.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        let role = estiba_agent::NodeRole {
            fargate: true,
            join_clusters: args.join_cluster.clone(),
            address,
            ..Default::default()
        };
        let (handle, shared) = start_node(&args.node, &data_dir, node_id, role, cp, images, stop_rx)?;
        let userns = shared.cfg.userns.clone();
        // ECS Exec sessions of this node's tasks run in process.
        server.exec.set_local(Arc::new(exec::LocalNode(shared)));
        Some((handle, userns))
    } else {
        None
    };

    http::serve_with(server, listener, tls, shutdown_signal()).await?;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = controllers.await;
    if let Some((a, userns)) = agent {
        // Containers keep running under their supervisors; the next start adopts them.
        let _ = a.await;
        userns.iter().for_each(estiba_runtime::container::userns::release);
    }
    Ok(())
}

/// How long a leader that stops renewing its lease stays leader (another server takes over
/// within about this long after a leader dies).
const LEADER_LEASE: Duration = Duration::from_secs(5);
/// The etcd election the servers of one prefix campaign in.
const ELECTION: &str = estiba_core::keys::ELECTION;

/// Runs the controllers while this server leads. Without etcd the server is alone and always
/// leads. With etcd it campaigns in etcd's election with its advertised URL `me` (holding a
/// lease it renews every third of `LEADER_LEASE`); once elected it runs the controllers until
/// it cannot renew the lease or the server stops (then it resigns, so the next server takes
/// over at once), and campaigns again. Controllers write with compare-and-swap, so the moments when a deposed leader has
/// not noticed yet cost conflicts, not wrong state.
async fn lead(
    etcd: Option<Arc<estiba_store::EtcdStore>>,
    server: Arc<estiba_server::Server>,
    settings: estiba_server::controller::Settings,
    mut stop: tokio::sync::watch::Receiver<bool>,
    me: String,
) {
    use std::sync::atomic::Ordering;
    let Some(etcd) = etcd else {
        server.leader.store(true, Ordering::Relaxed);
        estiba_server::controller::run(server, settings, stop).await;
        return;
    };
    while !*stop.borrow() {
        let lease = match etcd.grant_lease(LEADER_LEASE).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "no lease for the leader election; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Renews the lease; `lost` flips when a renewal fails or finds the lease gone.
        let (lost_tx, mut lost) = tokio::sync::watch::channel(false);
        let keeper = {
            let etcd = etcd.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LEADER_LEASE / 3).await;
                    if !matches!(etcd.keep_lease_alive(lease).await, Ok(true)) {
                        let _ = lost_tx.send(true);
                        return;
                    }
                }
            })
        };
        let elected = tokio::select! {
            r = etcd.campaign(ELECTION, &me, lease) => r,
            _ = lost.changed() => Err(estiba_store::StoreError::Backend("the election lease expired".into())),
            _ = stop.changed() => {
                keeper.abort();
                let _ = etcd.revoke_lease(lease).await;
                return;
            }
        };
        let leadership = match elected {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "campaigning for leader failed; trying again");
                keeper.abort();
                let _ = etcd.revoke_lease(lease).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        tracing::info!(server = %me, "this server leads: it runs the controllers");
        // Its log and metric ingest is now what the followers replicate.
        server.replication.begin_term();
        server.leader.store(true, Ordering::Relaxed);
        let (ctl_tx, ctl_rx) = tokio::sync::watch::channel(false);
        let controllers = tokio::spawn(estiba_server::controller::run(server.clone(), settings.clone(), ctl_rx));
        tokio::select! {
            _ = lost.changed() => tracing::warn!("the leader's lease could not be renewed: no longer leading"),
            _ = stop.changed() => {}
        }
        server.leader.store(false, Ordering::Relaxed);
        server.replication.end_term();
        let _ = ctl_tx.send(true);
        let _ = controllers.await;
        keeper.abort();
        let _ = etcd.resign(leadership).await;
        let _ = etcd.revoke_lease(lease).await;
    }
}

/// Starts the agent of a node (the server's own, or `estiba agent`'s) on control plane `cp`.
fn start_node(
    args: &NodeArgs,
    data_dir: &std::path::Path,
    node_id: String,
    role: estiba_agent::NodeRole,
    cp: Arc<dyn estiba_agent::control::ControlPlane>,
    images: Arc<estiba_runtime::image::ImageStore>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
) -> Result<(tokio::task::JoinHandle<()>, Arc<estiba_agent::Shared>)> {
    let executor = match args.container_runtime.as_str() {
        "native" => estiba_runtime::container::spec::Executor::Native,
        name => {
            let path = if name.contains('/') {
                PathBuf::from(name)
            } else {
                which(name).with_context(|| format!("container runtime {name} not found in PATH"))?
            };
            estiba_runtime::container::spec::Executor::Oci(path)
        }
    };
    let userns = match args.userns {
        Userns::Off => None,
        Userns::Remap => {
            if executor != estiba_runtime::container::spec::Executor::Native {
                anyhow::bail!("--userns remap needs the built-in executor (--container-runtime native)");
            }
            let (base, count) = args.userns_range;
            let ns = estiba_runtime::container::spec::UserNs {
                path: data_dir.join(format!("userns-{base}-{count}")),
                base,
                count,
            };
            estiba_runtime::container::userns::ensure(&ns).map_err(|e| anyhow::anyhow!("--userns remap: {e}"))?;
            Some(ns)
        }
    };
    let exe = std::env::current_exe().context("finding the estiba binary")?;
    let supervisor = estiba_agent::AgentConfig::supervisor_for(&exe);
    let shared = Arc::new(estiba_agent::Shared {
        cfg: estiba_agent::AgentConfig {
            node_id: node_id.clone(),
            data_dir: data_dir.join("agent"),
            supervisor: supervisor.clone(),
            exe,
            executor,
            mem_floor_bytes: args.memory_floor,
            secrets_dir: data_dir.join("secrets"),
            environment_files_dir: args.environment_files_dir.clone(),
            net: estiba_agent::network::NetConfig {
                vpc_cidr: args.vpc_cidr.trunc(),
                bridge_cidr: args.bridge_cidr.trunc(),
            },
            metrics_interval: args.metrics_interval,
            role,
            userns,
        },
        cp,
        images,
        net: Arc::new(estiba_net::Host::new(&data_dir.join("net"))),
        pool: estiba_agent::pool::Pool::new(
            supervisor,
            if args.container_runtime == "native" { args.warm_supervisors } else { 0 },
        ),
        spare_netns: estiba_net::netns::Spares::new(args.warm_namespaces),
        task_addresses: Default::default(),
        resolver: Default::default(),
        connect_applied: Default::default(),
        claimed_blocks: Default::default(),
    });
    tracing::info!(node = %node_id, runtime = %args.container_runtime, "running tasks on this machine");
    Ok((tokio::spawn(estiba_agent::run(shared.clone(), stop_rx)), shared))
}

/// `estiba agent`: a node of a server on another machine.
fn run_agent(args: AgentArgs) -> Result<()> {
    init_tracing(args.log_format);
    if !is_root() {
        bail!("estiba agent runs containers: it must run as root");
    }
    if !args.fargate && args.cluster.is_empty() {
        bail!("give --cluster NAME (a container instance), --fargate (Fargate capacity), or both");
    }
    if args.external && args.cluster.is_empty() {
        bail!("--external needs --cluster: it is how the machine joins a cluster");
    }
    let node_id = args.node.node_id.clone().unwrap_or_else(hostname);
    if !estiba_core::keys::valid_node_id(&node_id) {
        bail!("the node id '{node_id}' must not be empty nor hold '/' (set it with --node-id)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("estiba-agent").build()?;
    rt.block_on(async move {
        let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        // https:// servers: their certificates are verified against --server-ca (or the
        // system's roots), for the agent API and for pulls from their registries alike.
        let https: Vec<String> = args
            .server
            .iter()
            .filter_map(|s| s.strip_prefix("https://")?.split('/').next().map(str::to_owned))
            .collect();
        let roots = if https.is_empty() {
            Vec::new()
        } else {
            estiba_tls::trust_roots(args.server_ca.as_deref()).context("the certificates to trust for https servers")?
        };
        let tls = match roots.is_empty() {
            true => None,
            false => Some(estiba_tls::client_config(&roots, &[]).context("--server-ca")?),
        };
        let cp = estiba_agent::remote::RemoteControl::start_with_tls(
            &args.server,
            args.join_token.clone(),
            node_id.clone(),
            args.node.vpc_resolver == OnOff::On,
            args.node.load_balancers == OnOff::On,
            tls,
        )?;
        // http:// servers' registries speak plain HTTP, as the server's own node pulls from it.
        let mut insecure = args.node.insecure_registries.clone();
        insecure.extend(args.server.iter().filter_map(|s| server_authority(s).map(str::to_owned)));
        let transport = estiba_runtime::image::registry::Transport {
            insecure,
            https,
            roots: roots.iter().map(|c| c.to_vec()).collect(),
        };
        let images = estiba_runtime::image::ImageStore::open_with(data_dir.join("images"), transport)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let address = match args.address {
            Some(a) => Some(a),
            None => route_source(&args.server[0]),
        };
        let role = estiba_agent::NodeRole {
            fargate: args.fargate,
            join_clusters: args.cluster.clone(),
            external: args.external,
            attributes: args.attributes.clone(),
            remote: true,
            address,
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let exec_sessions = cp.exec_sessions();
        let (agent, shared) = start_node(&args.node, &data_dir, node_id.clone(), role, cp, images, stop_rx)?;
        let userns = shared.cfg.userns.clone();
        // ECS Exec into this host's tasks: sessions the servers ask this agent to dial back for.
        tokio::spawn(estiba_agent::exec::serve_remote(shared, exec_sessions));
        tracing::info!(node = %node_id, servers = %args.server.join(","), "estiba agent started");
        shutdown_signal().await;
        let _ = stop_tx.send(true);
        // Containers keep running under their supervisors; the next start adopts them.
        let _ = agent.await;
        userns.iter().for_each(estiba_runtime::container::userns::release);
        Ok(())
    })
}

/// `HOST:PORT` of a plain server URL (`http://HOST:PORT/...`).
fn server_authority(url: &str) -> Option<&str> {
    url.strip_prefix("http://")?.split('/').next().filter(|a| !a.is_empty())
}

/// The local address of this machine's route to a server URL's host (a UDP socket connected
/// there sends nothing, but the kernel picks the source address).
fn route_source(server: &str) -> Option<std::net::Ipv4Addr> {
    let authority = server.strip_prefix("https://").and_then(|r| r.split('/').next()).or(server_authority(server))?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority).ok()?.find(|a| a.is_ipv4())?;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect(addr).ok()?;
    match sock.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(a) if !a.is_unspecified() => Some(a),
        _ => None,
    }
}

/// The server's telemetry sink: target health and load balancer counters to the server,
/// cgroup samples and load balancer counters to the metric ingest, the rest counted.
struct ServerSink {
    server: Arc<estiba_server::Server>,
    ingest: Arc<estiba_server::metric_ingest::MetricIngest>,
    rest: estiba_agent::telemetry::CountingSink,
}

impl estiba_core::telemetry::TelemetrySink for ServerSink {
    fn deliver(&self, batch: estiba_core::telemetry::Telemetry) {
        match batch {
            estiba_core::telemetry::Telemetry::TargetHealth(changes) => {
                // The leader's controllers wait on target health: a follower passes it on.
                estiba_server::peers::tell_leader(
                    &self.server,
                    &estiba_core::telemetry::Telemetry::TargetHealth(changes.clone()),
                );
                self.server.target_health_reported(&changes)
            }
            estiba_core::telemetry::Telemetry::LbMetrics(reports) => reports.into_iter().for_each(|m| {
                self.ingest.lb_report(&m);
                self.server.lb_metrics.report(m)
            }),
            estiba_core::telemetry::Telemetry::Metrics(samples) => self.ingest.samples(&samples),
            other => self.rest.deliver(other),
        }
    }
}

/// The server's own registry as the agent's image store sees it: read from its files.
struct OwnRegistry {
    server: Arc<estiba_server::Server>,
    registry: Arc<estiba_server::registry::Registry>,
}

impl estiba_runtime::image::LocalRegistry for OwnRegistry {
    fn host(&self) -> &str {
        &self.registry.host
    }

    fn manifest(&self, repository: &str, reference: &str) -> Option<Vec<u8>> {
        let d = estiba_server::registry::resolve_local(&self.server, repository, reference)?;
        self.copy_here(&d)?;
        self.registry.blobs.read(&d).ok()
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let d = estiba_registry::Digest::parse(digest).ok()?;
        self.copy_here(&d).map(|_| self.registry.blobs.path(&d))
    }
}

impl OwnRegistry {
    /// The blob's size once it is on this server's disk: fetched from the other servers
    /// sharing the state when only they have it (the image store calls from the runtime).
    fn copy_here(&self, d: &estiba_registry::Digest) -> Option<u64> {
        if let Some(size) = self.registry.blobs.stat(d) {
            return Some(size);
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        tokio::task::block_in_place(|| {
            handle.block_on(estiba_server::registry::local_copy(&self.server, &self.registry, d))
        })
        .ok()
        .flatten()
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file())
}

/// `estiba pull`: pulls and unpacks an image into the store the agent starts tasks from.
/// `estiba migrate`: copies a SQLite state into an empty etcd prefix, in transactions within
/// etcd's limits, each refusing to overwrite a key. Revisions are etcd's afterwards (the state
/// keeps no revision of its own inside the values).
fn migrate(args: MigrateArgs) -> Result<()> {
    use estiba_store::Store;
    if !args.from_sqlite.is_file() {
        bail!("no SQLite state at {}", args.from_sqlite.display());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let source = estiba_store::SqliteStore::open(&args.from_sqlite)
            .with_context(|| format!("opening {}", args.from_sqlite.display()))?;
        let target = args.etcd.connect().await?;
        let existing = target.range("").await?.kvs.len();
        if existing > 0 {
            bail!(
                "etcd already holds {existing} keys under {:?}: migrate only into an empty prefix",
                args.etcd.etcd_prefix
            );
        }
        let all = source.range("").await?;
        let kvs: Vec<(String, bytes::Bytes)> = all.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        let bytes: usize = kvs.iter().map(|(k, v)| k.len() + v.len()).sum();
        let batches = target.import(&kvs).await?;
        let mut tables: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for (k, _) in &kvs {
            let table = k.match_indices('/').nth(1).map_or(k.as_str(), |(i, _)| &k[..i]);
            *tables.entry(table).or_default() += 1;
        }
        for (table, n) in &tables {
            println!("{n:>8}  {table}/");
        }
        println!(
            "copied {} keys ({bytes} bytes) from {} into etcd under {:?} in {batches} transactions",
            kvs.len(),
            args.from_sqlite.display(),
            args.etcd.etcd_prefix
        );
        Ok(())
    })
}

fn pull(args: PullArgs) -> Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let creds = match (args.username, args.password) {
        (Some(username), Some(password)) => Some(estiba_runtime::image::Credentials { username, password }),
        (None, None) => None,
        _ => bail!("--username and --password go together"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let image = rt.block_on(async {
        let store = estiba_runtime::image::ImageStore::open(data_dir.join("images"), args.insecure_registries)?;
        store.pull(&args.image, creds).await
    });
    let image = image.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{} {}", image.reference, image.digest);
    Ok(())
}

/// `estiba logs`: prints the container logs of a task run on this machine.
fn logs(args: LogsArgs) -> Result<()> {
    use estiba_runtime::logs;
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let task_id = args.task.rsplit('/').next().unwrap_or(&args.task);
    let dir = data_dir.join("agent/tasks").join(task_id);
    if !dir.is_dir() {
        bail!("no task {task_id} has run on this machine (looked in {})", dir.display());
    }
    let list = || -> Vec<String> {
        let mut c: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("spec.json").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        c.sort();
        c
    };
    let all = list();
    // Every container the task has, started or not (older task directories lack the list).
    let declared = std::fs::read(dir.join("task.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["containers"].as_array().map(Vec::len))
        .unwrap_or(0);

    if let Some(c) = &args.container {
        if !all.contains(c) && !args.follow {
            bail!("task {task_id} has no container {c} (it has: {})", all.join(", "));
        }
    }
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    loop {
        // The task is over once its runner marked it; read once more after that.
        let finished = dir.join("stopped").exists();
        let mut containers = list();
        if let Some(c) = &args.container {
            containers.retain(|x| x == c);
        }
        // Prefixed whenever the task has several containers, even before the others start.
        let multi = args.container.is_none() && declared.max(list().len()) > 1;
        for c in &containers {
            let recs = logs::read_all(&dir.join(c).join("container.log")).unwrap_or_default();
            let from = seen.get(c).copied().filter(|&n| n <= recs.len()).unwrap_or(0);
            for r in &recs[from..] {
                let prefix = if multi { format!("{c} | ") } else { String::new() };
                let line = if args.timestamps {
                    format!("{prefix}{} {}", r.time, r.line)
                } else {
                    format!("{prefix}{}", r.line)
                };
                if r.stream == "stderr" {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
            seen.insert(c.clone(), recs.len());
        }
        if !args.follow || finished {
            if let Some(c) = &args.container {
                if containers.is_empty() {
                    bail!("task {task_id} has no container {c} (it has: {})", list().join(", "));
                }
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
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

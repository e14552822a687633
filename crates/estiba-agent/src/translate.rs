//! ECS container definitions (with RunTask overrides and the image's configuration) become
//! runtime container specs here, with Docker's and ECS's precedence rules:
//!
//! - the command is the override's, else the definition's, else the image's `Cmd`; an
//!   `entryPoint` in the definition replaces the image's and drops the image's `Cmd`;
//! - environment: the image's, then `environmentFiles`, then `environment`, then overrides;
//! - `workingDirectory` and `user` fall back to the image's;
//! - `ulimits` are clamped to the host's hard limits by the runtime; the default `nofile` is
//!   Fargate's 65535, also clamped;
//! - task `cpu` becomes a CFS quota on the task's cgroup (a limit, as on Fargate), container
//!   `cpu` becomes CPU shares, `memory` a hard limit, `memoryReservation` a soft one;
//! - `privileged` and `dockerSecurityOptions` `seccomp=unconfined` count only for EC2 and
//!   EXTERNAL tasks (Fargate has neither); `linuxParameters.devices` become device nodes and
//!   device-cgroup rules.

use std::path::{Path, PathBuf};
use std::time::Duration;

use estiba_api::ecs::{
    ContainerDefinition, ContainerOverride, DeviceCgroupPermission, HealthCheck, KeyValuePair, LaunchType, Task,
    TaskDefinition,
};
use estiba_core::taskdef;
use estiba_runtime::container::spec::{Cgroup, ContainerSpec, Device, Executor, Rlimit, UserNs};
use estiba_runtime::image::Image;

/// The ECS agent's default stop timeout.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Fargate's default open-files limit.
pub const DEFAULT_NOFILE: u64 = 65_535;

/// What the task gives every container.
pub struct TaskContext<'a> {
    pub task: &'a Task,
    pub td: &'a TaskDefinition,
    pub task_id: &'a str,
    pub task_dir: &'a Path,
    /// The task's namespace, or `None` in `host` mode.
    pub netns: Option<PathBuf>,
    /// The task's hostname (its private DNS name in awsvpc mode).
    pub hostname: &'a str,
    pub executor: Executor,
    /// Where `environmentFiles` are read from (`--environment-files-dir`); none when unset.
    pub environment_files_dir: Option<&'a Path>,
    /// The container's `secrets`, resolved by the control plane: (name, value).
    pub secrets: &'a [(String, String)],
    /// The node's user namespace (`--userns remap`), if any.
    pub userns: Option<&'a UserNs>,
}

/// A health check as the agent runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    pub args: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

pub fn health(hc: &HealthCheck) -> Option<Health> {
    let args = match hc.command.first().map(String::as_str) {
        Some("CMD") => hc.command[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), hc.command[1..].join(" ")],
        _ => return None,
    };
    if args.is_empty() {
        return None;
    }
    Some(Health {
        args,
        interval: Duration::from_secs(hc.interval.unwrap_or(30).max(1) as u64),
        timeout: Duration::from_secs(hc.timeout.unwrap_or(5).max(1) as u64),
        retries: hc.retries.unwrap_or(3).max(1) as u32,
        start_period: Duration::from_secs(hc.start_period.unwrap_or(0).max(0) as u64),
    })
}

/// Reads an environment file: `KEY=value` lines, `#` comments and blank lines skipped.
/// The `KEY=value` lines of an environment file, read beneath the node's environment files
/// directory (`None`: the node reads none).
pub fn env_file(value: &str, dir: Option<&Path>) -> Result<Vec<String>, String> {
    let name = estiba_core::taskdef::environment_file_name(value).map_err(|e| e.message)?;
    let Some(dir) = dir else {
        return Err(format!(
            "environment file {value}: this node reads no environment files (start estiba with --environment-files-dir DIR)"
        ));
    };
    let bytes = estiba_runtime::files::read_beneath(dir, Path::new(&name), ENV_FILE_MAX_BYTES)
        .map_err(|e| format!("environment file {value}: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && l.contains('='))
        .map(str::to_owned)
        .collect())
}

/// A bound on one environment file: it holds variables, not data.
const ENV_FILE_MAX_BYTES: u64 = 1 << 20;

/// Sets `KEY=value` entries, later ones replacing earlier ones with the same key.
fn merge_env(env: &mut Vec<String>, add: impl IntoIterator<Item = String>) {
    for e in add {
        let key = e.split('=').next().unwrap_or("").to_owned();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(e);
    }
}

fn pairs(list: Option<&Vec<KeyValuePair>>) -> Vec<String> {
    list.into_iter()
        .flatten()
        .filter_map(|kv| Some(format!("{}={}", kv.name.as_deref()?, kv.value.as_deref().unwrap_or(""))))
        .collect()
}

fn mib(v: i64) -> i64 {
    v * 1024 * 1024
}

/// Builds the runtime spec of one container of the task.
pub fn container_spec(cx: &TaskContext<'_>, def: &ContainerDefinition, image: &Image) -> Result<ContainerSpec, String> {
    let name = def.name.clone().unwrap_or_default();
    let ov: Option<&ContainerOverride> = cx
        .task
        .overrides
        .as_ref()
        .and_then(|o| o.container_overrides.as_ref())
        .and_then(|l| l.iter().find(|o| o.name.as_deref() == Some(name.as_str())));
    let cfg = &image.config;

    let entrypoint: Vec<String> =
        def.entry_point.clone().filter(|e| !e.is_empty()).or_else(|| cfg.entrypoint.clone()).unwrap_or_default();
    let command: Vec<String> = match (ov.and_then(|o| o.command.clone()), def.command.clone()) {
        (Some(c), _) => c,
        (None, Some(c)) => c,
        (None, None) if def.entry_point.as_ref().is_some_and(|e| !e.is_empty()) => vec![],
        (None, None) => cfg.cmd.clone().unwrap_or_default(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(command).collect();
    if args.is_empty() {
        return Err(format!("container {name}: no command: neither the container definition nor the image gives one"));
    }

    let mut env = cfg.env.clone().unwrap_or_default();
    for f in def.environment_files.iter().flatten() {
        merge_env(&mut env, env_file(&f.value, cx.environment_files_dir)?);
    }
    for f in ov.and_then(|o| o.environment_files.as_ref()).into_iter().flatten() {
        merge_env(&mut env, env_file(&f.value, cx.environment_files_dir)?);
    }
    merge_env(&mut env, pairs(def.environment.as_ref()));
    merge_env(&mut env, pairs(ov.and_then(|o| o.environment.as_ref())));
    for secret in def.secrets.iter().flatten() {
        let (_, value) = cx
            .secrets
            .iter()
            .find(|(n, _)| *n == secret.name)
            .ok_or_else(|| format!("secret {} of container {name} was not resolved", secret.name))?;
        merge_env(&mut env, [format!("{}={value}", secret.name)]);
    }
    merge_env(&mut env, [format!("ECS_CONTAINER_NAME={name}")]);
    merge_env(&mut env, crate::metadata::env(cx.task_id, &name));
    merge_env(&mut env, crate::credentials::env(cx.task, cx.td));

    let mut rlimits: Vec<Rlimit> = def
        .ulimits
        .iter()
        .flatten()
        .map(|u| Rlimit {
            kind: format!("RLIMIT_{}", u.name.as_str().to_ascii_uppercase()),
            soft: u.soft_limit.max(0) as u64,
            hard: u.hard_limit.max(0) as u64,
        })
        .collect();
    if !rlimits.iter().any(|r| r.kind == "RLIMIT_NOFILE") {
        rlimits.push(Rlimit { kind: "RLIMIT_NOFILE".into(), soft: DEFAULT_NOFILE, hard: DEFAULT_NOFILE });
    }

    let lp = def.linux_parameters.as_ref();
    let init = lp.and_then(|l| l.init_process_enabled).unwrap_or(false);
    if init && matches!(cx.executor, Executor::Oci(_)) {
        // Said here, where the task is known and logs reach the server's log: the supervisor
        // that runs the OCI runtime has no log of its own.
        tracing::warn!(task = cx.task_id, container = %name, "initProcessEnabled needs the built-in executor; ignored with an OCI runtime");
    }
    let size = taskdef::task_size(cx.task.cpu.as_deref(), cx.task.memory.as_deref()).unwrap_or_default();
    let cpu_units = ov.and_then(|o| o.cpu).unwrap_or(def.cpu);
    let memory = ov.and_then(|o| o.memory).or(def.memory);
    let reservation = ov.and_then(|o| o.memory_reservation).or(def.memory_reservation);
    // Fargate never runs privileged or unconfined containers (RegisterTaskDefinition refuses
    // privileged ones for Fargate; this covers definitions registered for EC2 and run there).
    let fargate = cx.task.launch_type == Some(LaunchType::Fargate);
    let privileged = def.privileged.unwrap_or(false) && !fargate;
    let seccomp_unconfined = !fargate
        && def
            .docker_security_options
            .iter()
            .flatten()
            .any(|o| matches!(o.as_str(), "seccomp=unconfined" | "seccomp:unconfined"));
    let (devices, mut extra_devices) = devices(lp.and_then(|l| l.devices.as_deref()).unwrap_or_default())?;
    if privileged {
        extra_devices = vec!["a".into()];
    }
    let cgroup = Cgroup {
        task_path: format!("estiba/{}", cx.task_id),
        name: name.clone(),
        task_cpu_quota_us: size
            .cpu
            .map(|c| (c as i64) * estiba_runtime::container::cgroup::CPU_PERIOD_US as i64 / 1024),
        task_memory_bytes: size.memory.map(|m| mib(m as i64)),
        cpu_shares: Some((cpu_units.max(0) as u64).max(2)),
        memory_bytes: memory.map(|m| mib(m as i64)),
        memory_reservation_bytes: reservation.map(|m| mib(m as i64)),
        pids_limit: None,
        extra_devices,
    };
    let caps = lp.and_then(|l| l.capabilities.as_ref());
    Ok(ContainerSpec {
        id: format!("{}-{name}", cx.task_id),
        layers: image.layers.clone(),
        state_dir: cx.task_dir.join(&name),
        args,
        env,
        cwd: def
            .working_directory
            .clone()
            .or_else(|| cfg.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: def.user.clone().or_else(|| cfg.user.clone()).filter(|u| !u.is_empty()),
        hostname: Some(def.hostname.clone().unwrap_or_else(|| cx.hostname.to_owned())),
        readonly_rootfs: def.readonly_root_filesystem.unwrap_or(false),
        init,
        rlimits,
        host_network: cx.netns.is_none(),
        netns: cx.netns.clone(),
        labels: def.docker_labels.clone().unwrap_or_default(),
        cgroup,
        mounts: ["hosts", "hostname", "resolv.conf"]
            .iter()
            .filter(|f| cx.task_dir.join(f).exists())
            .map(|f| estiba_runtime::container::spec::BindMount {
                source: cx.task_dir.join(f),
                destination: format!("/etc/{f}"),
                readonly: false,
            })
            .collect(),

        privileged,
        seccomp_unconfined,
        devices,
        cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        executor: cx.executor.clone(),
        log_rotation: Default::default(),
        // As Docker's userns-remap: not for privileged containers, nor ones in the host's
        // network namespace (they share the host's, where the remapped root has no rights).
        userns: cx.userns.filter(|_| !privileged && cx.netns.is_some() && cx.executor == Executor::Native).cloned(),
    })
}

/// `linuxParameters.devices`: the nodes to make and the device-cgroup rules that let the
/// container use them (the host's device numbers, read here on the host).
fn devices(list: &[estiba_api::ecs::Device]) -> Result<(Vec<Device>, Vec<String>), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut nodes = Vec::new();
    let mut rules = Vec::new();
    for d in list {
        let md = std::fs::metadata(&d.host_path).map_err(|e| format!("device {}: {e}", d.host_path))?;
        let kind = if md.file_type().is_char_device() {
            'c'
        } else if md.file_type().is_block_device() {
            'b'
        } else {
            return Err(format!("device {}: not a device node", d.host_path));
        };
        let perms: String = match d.permissions.as_deref() {
            None | Some([]) => "rwm".into(),
            Some(p) => p
                .iter()
                .map(|p| match p {
                    DeviceCgroupPermission::Read => 'r',
                    DeviceCgroupPermission::Write => 'w',
                    DeviceCgroupPermission::Mknod => 'm',
                })
                .collect(),
        };
        let rdev = md.rdev();
        rules.push(format!("{kind} {}:{} {perms}", nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)));
        nodes.push(Device {
            host_path: PathBuf::from(&d.host_path),
            container_path: d.container_path.clone().unwrap_or_default(),
            permissions: perms,
        });
    }
    Ok((nodes, rules))
}

pub fn stop_timeout(def: &ContainerDefinition) -> Duration {
    def.stop_timeout.map(|s| Duration::from_secs(s.max(0) as u64)).unwrap_or(DEFAULT_STOP_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_api::ecs::{ContainerOverride, TaskOverride, Ulimit, UlimitName};
    use estiba_runtime::image::ImageConfig;

    fn image() -> Image {
        Image {
            reference: "busybox".into(),
            digest: "sha256:0".into(),
            config: ImageConfig {
                env: Some(vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()]),
                cmd: Some(vec!["sh".into()]),
                entrypoint: None,
                working_dir: Some("/srv".into()),
                user: Some("app".into()),
                stop_signal: None,
            },
            layers: vec![PathBuf::from("/layers/a")],
        }
    }

    #[test]
    fn precedence() {
        let dir = tempfile::tempdir().unwrap();
        let envfile = dir.path().join("e.env");
        std::fs::write(envfile, "# comment\nB=file\nC=file\n\n").unwrap();
        let def = ContainerDefinition {
            name: Some("web".into()),
            image: Some("busybox".into()),
            cpu: 512,
            memory: Some(128),
            memory_reservation: Some(64),
            environment: Some(vec![KeyValuePair { name: Some("C".into()), value: Some("def".into()) }]),
            environment_files: Some(vec![estiba_api::ecs::EnvironmentFile {
                value: "arn:aws:s3:::e.env".into(),
                r#type: estiba_api::ecs::EnvironmentFileType::S3,
            }]),
            ulimits: Some(vec![Ulimit { name: UlimitName::Nproc, soft_limit: 10, hard_limit: 20 }]),
            ..Default::default()
        };
        let mut task = Task { cpu: Some("1024".into()), memory: Some("2048".into()), ..Default::default() };
        let td = TaskDefinition::default();
        let cx = TaskContext {
            task: &task,
            td: &td,
            task_id: "abc",
            task_dir: Path::new("/t"),
            netns: None,
            hostname: "abc",
            executor: Executor::Native,
            environment_files_dir: Some(dir.path()),
            secrets: &[],
            userns: None,
        };
        let s = container_spec(&cx, &def, &image()).unwrap();
        assert_eq!(s.args, ["sh"]);
        // Only beneath the directory, and only when there is one.
        for (value, dir) in [("/etc/passwd", Some(dir.path())), ("../e.env", Some(dir.path())), ("e.env", None)] {
            assert!(env_file(value, dir).is_err(), "{value}");
        }
        assert!(
            s.env.contains(&"A=image".into()) && s.env.contains(&"B=file".into()) && s.env.contains(&"C=def".into())
        );
        assert_eq!((s.cwd.as_str(), s.user.as_deref()), ("/srv", Some("app")));
        assert_eq!(s.cgroup.task_cpu_quota_us, Some(100_000));
        assert_eq!(s.cgroup.task_memory_bytes, Some(2048 << 20));
        assert_eq!(
            (s.cgroup.cpu_shares, s.cgroup.memory_bytes, s.cgroup.memory_reservation_bytes),
            (Some(512), Some(128 << 20), Some(64 << 20))
        );
        assert!(s.rlimits.iter().any(|r| r.kind == "RLIMIT_NPROC" && r.hard == 20));
        assert!(s.rlimits.iter().any(|r| r.kind == "RLIMIT_NOFILE" && r.soft == DEFAULT_NOFILE));

        // An entry point in the definition drops the image's command; overrides win.
        let mut d2 = def.clone();
        d2.entry_point = Some(vec!["/bin/echo".into()]);
        assert_eq!(container_spec(&cx, &d2, &image()).unwrap().args, ["/bin/echo"]);
        task.overrides = Some(TaskOverride {
            container_overrides: Some(vec![ContainerOverride {
                name: Some("web".into()),
                command: Some(vec!["hi".into()]),
                environment: Some(vec![KeyValuePair { name: Some("C".into()), value: Some("override".into()) }]),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let cx = TaskContext {
            task: &task,
            td: &td,
            task_id: "abc",
            task_dir: Path::new("/t"),
            netns: None,
            hostname: "abc",
            executor: Executor::Native,
            environment_files_dir: Some(dir.path()),
            secrets: &[],
            userns: None,
        };
        let s = container_spec(&cx, &d2, &image()).unwrap();
        assert_eq!(s.args, ["/bin/echo", "hi"]);
        assert!(s.env.contains(&"C=override".into()));
    }

    #[test]
    fn secrets_become_environment_variables_and_must_be_resolved() {
        let def = ContainerDefinition {
            name: Some("web".into()),
            image: Some("busybox".into()),
            environment: Some(vec![KeyValuePair { name: Some("DB".into()), value: Some("plain".into()) }]),
            secrets: Some(vec![estiba_api::ecs::Secret { name: "DB".into(), value_from: "/app/db".into() }]),
            ..Default::default()
        };
        let task = Task::default();
        let td = TaskDefinition::default();
        let resolved = [("DB".to_string(), "from-ssm".to_string())];
        let mut cx = TaskContext {
            task: &task,
            td: &td,
            task_id: "abc",
            task_dir: Path::new("/t"),
            netns: None,
            hostname: "abc",
            executor: Executor::Native,
            environment_files_dir: None,
            secrets: &resolved,
            userns: None,
        };
        let s = container_spec(&cx, &def, &image()).unwrap();
        assert!(s.env.contains(&"DB=from-ssm".into()), "{:?}", s.env);
        assert!(!s.env.contains(&"DB=plain".into()));
        cx.secrets = &[];
        assert_eq!(container_spec(&cx, &def, &image()).unwrap_err(), "secret DB of container web was not resolved");
    }

    #[test]
    fn health_commands() {
        let h = health(&HealthCheck {
            command: vec!["CMD-SHELL".into(), "wget -q localhost".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(h.args, ["/bin/sh", "-c", "wget -q localhost"]);
        assert_eq!((h.interval, h.retries), (Duration::from_secs(30), 3));
        assert!(health(&HealthCheck { command: vec!["NONE".into()], ..Default::default() }).is_none());
    }

    #[test]
    fn privileged_and_unconfined_only_off_fargate_and_devices() {
        use estiba_api::ecs::{Device as EcsDevice, LinuxParameters};
        let td = TaskDefinition::default();
        let def = ContainerDefinition {
            name: Some("app".into()),
            image: Some("busybox".into()),
            privileged: Some(true),
            docker_security_options: Some(vec!["seccomp=unconfined".into()]),
            linux_parameters: Some(LinuxParameters {
                devices: Some(vec![EcsDevice {
                    host_path: "/dev/null".into(),
                    container_path: Some("/dev/given".into()),
                    permissions: Some(vec![DeviceCgroupPermission::Read, DeviceCgroupPermission::Write]),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = |launch: LaunchType| {
            let task = Task { launch_type: Some(launch), ..Default::default() };
            let cx = TaskContext {
                task: &task,
                td: &td,
                task_id: "abc",
                task_dir: Path::new("/t"),
                netns: None,
                hostname: "abc",
                executor: Executor::Native,
                environment_files_dir: None,
                secrets: &[],
                userns: None,
            };
            container_spec(&cx, &def, &image()).unwrap()
        };
        let ec2 = spec(LaunchType::Ec2);
        assert!(ec2.privileged && ec2.seccomp_unconfined);
        assert_eq!(ec2.cgroup.extra_devices, ["a"], "privileged: every device");
        let f = spec(LaunchType::Fargate);
        assert!(!f.privileged && !f.seccomp_unconfined);
        assert_eq!(f.cgroup.extra_devices, ["c 1:3 rw"], "the given device's own rule");
        assert_eq!(f.devices[0].container_path, "/dev/given");
        // Not a device: refused.
        let mut bad = def.clone();
        bad.linux_parameters.as_mut().unwrap().devices.as_mut().unwrap()[0].host_path = "/etc/hostname".into();
        let task = Task::default();
        let cx = TaskContext {
            task: &task,
            td: &td,
            task_id: "abc",
            task_dir: Path::new("/t"),
            netns: None,
            hostname: "abc",
            executor: Executor::Native,
            environment_files_dir: None,
            secrets: &[],
            userns: None,
        };
        assert!(container_spec(&cx, &bad, &image()).unwrap_err().contains("not a device"));
    }
}

//! Fargate task sizes: the CPU and memory strings ECS accepts ("256", "1 vCPU", "2 GB") and
//! the combinations Fargate supports.

/// Parses a task-level CPU value into CPU units: `"1024"`, `"1 vCPU"`, `"0.25 vcpu"`.
pub fn parse_cpu(s: &str) -> Option<u32> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    if let Some(v) = lower.strip_suffix("vcpu") {
        let n: f64 = v.trim().parse().ok()?;
        let units = n * 1024.0;
        return (n > 0.0 && units.fract() == 0.0 && units <= u32::MAX as f64).then_some(units as u32);
    }
    t.parse().ok()
}

/// Parses a task-level memory value into MiB: `"512"`, `"2 GB"`, `"0.5GB"`.
pub fn parse_memory(s: &str) -> Option<u32> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    if let Some(v) = lower.strip_suffix("gb") {
        let n: f64 = v.trim().parse().ok()?;
        let mib = n * 1024.0;
        return (n > 0.0 && mib.fract() == 0.0 && mib <= u32::MAX as f64).then_some(mib as u32);
    }
    let v = lower.strip_suffix("mib").or_else(|| lower.strip_suffix("mb")).unwrap_or(&lower);
    v.trim().parse().ok()
}

/// Whether Fargate offers this CPU/memory combination (Linux, platform 1.4.0).
pub fn valid_size(cpu: u32, memory: u32) -> bool {
    let gb = |g: u32| g * 1024;
    match cpu {
        256 => [512, 1024, 2048].contains(&memory),
        512 => (1..=4).map(gb).any(|m| m == memory),
        1024 => (2..=8).map(gb).any(|m| m == memory),
        2048 => (4..=16).map(gb).any(|m| m == memory),
        4096 => (8..=30).map(gb).any(|m| m == memory),
        8192 => (16..=60).step_by(4).map(gb).any(|m| m == memory),
        16384 => (32..=120).step_by(8).map(gb).any(|m| m == memory),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(parse_cpu("256"), Some(256));
        assert_eq!(parse_cpu("1 vCPU"), Some(1024));
        assert_eq!(parse_cpu("0.25 vcpu"), Some(256));
        assert_eq!(parse_cpu(".5 VCPU"), Some(512));
        assert_eq!(parse_cpu("abc"), None);
        assert_eq!(parse_memory("2 GB"), Some(2048));
        assert_eq!(parse_memory("0.5GB"), Some(512));
        assert_eq!(parse_memory("512"), Some(512));
        assert_eq!(parse_memory("-1"), None);
    }

    #[test]
    fn table() {
        assert!(valid_size(256, 512));
        assert!(!valid_size(256, 4096));
        assert!(valid_size(512, 4096));
        assert!(valid_size(1024, 8192));
        assert!(!valid_size(1024, 1024));
        assert!(valid_size(4096, 30 * 1024));
        assert!(valid_size(8192, 20 * 1024));
        assert!(!valid_size(8192, 18 * 1024));
        assert!(valid_size(16384, 120 * 1024));
        assert!(!valid_size(128, 512));
    }
}

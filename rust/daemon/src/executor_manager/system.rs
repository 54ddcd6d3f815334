//! Facts about the machine a node runs on: its name, its memory, where an interpreter lives,
//! and how much memory a child holds. Best effort — a node with odd `/proc` still runs, it
//! just reports (and enforces) less.

use std::path::Path;

/// The host name, used as the node name when none is configured.
pub fn default_node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Total memory in bytes from `/proc/meminfo`, or 0 when it cannot be read.
pub(super) fn memory_bytes() -> u64 {
    meminfo_field("MemTotal:")
}

/// Memory available for new processes (`MemAvailable`) in bytes, or 0 when unknown.
pub(super) fn memory_available_bytes() -> u64 {
    meminfo_field("MemAvailable:")
}

/// CPUs this process may use.
pub(super) fn cpu_count() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

fn meminfo_field(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo(&text, field))
        .unwrap_or(0)
}

fn parse_meminfo(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident memory (`VmRSS`) of process `pid` in bytes; `None` when it cannot be read — the
/// process is gone, or a zombie (which holds no memory any more).
pub(super) fn resident_bytes(pid: u32) -> Option<u64> {
    // `status` rather than `statm`: it states its unit, so no page size is needed.
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_rss(&text)
}

fn parse_status_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The interpreter to start an executor with: the one the session asked for (the client's own
/// interpreter) when it exists on this node, else the node's default. A client on another
/// machine may name a path that means nothing here, so a missing one is not an error.
pub(super) fn resolve_python(requested: &str, default: &str) -> String {
    if requested.is_empty() {
        return default.to_string();
    }
    let found = if requested.contains('/') {
        is_executable(Path::new(requested))
    } else {
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| is_executable(&dir.join(requested)))
        })
    };
    if found {
        requested.to_string()
    } else {
        tracing::debug!(
            requested,
            default,
            "requested interpreter not found; using the default"
        );
        default.to_string()
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemFree:  100 kB\nMemTotal:       16318412 kB\nMemAvailable: 2048 kB\n";
        assert_eq!(parse_meminfo(text, "MemTotal:"), Some(16318412 * 1024));
        assert_eq!(parse_meminfo(text, "MemAvailable:"), Some(2048 * 1024));
        assert_eq!(parse_meminfo("nothing here", "MemTotal:"), None);
        assert!(memory_bytes() >= memory_available_bytes());
    }

    #[test]
    fn resident_memory_is_read_in_bytes() {
        let text = "Name:\tpython3\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n";
        assert_eq!(parse_status_rss(text), Some(2048 * 1024));
        // A zombie's status has no VmRSS line.
        assert_eq!(parse_status_rss("Name:\tx\nState:\tZ (zombie)\n"), None);
        assert!(resident_bytes(std::process::id()).is_some_and(|b| b > 0));
    }

    #[test]
    fn missing_interpreter_falls_back_to_default() {
        assert_eq!(resolve_python("", "python3"), "python3");
        assert_eq!(resolve_python("/no/such/python", "python3"), "python3");
        assert_eq!(resolve_python("no-such-python-flame", "python3"), "python3");
        assert_eq!(resolve_python("sh", "python3"), "sh");
        assert_eq!(resolve_python("/bin/sh", "python3"), "/bin/sh");
    }

    #[test]
    fn node_name_is_never_empty() {
        assert!(!default_node_name().is_empty());
    }
}

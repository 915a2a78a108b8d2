//! CPU time of the bench and of the server from `/proc/<pid>/stat`, and the
//! server's context switches from its threads' `/proc/<pid>/task/*/status`,
//! read around each timed part.

use crate::report::Report;

/// Clock ticks per second of the `/proc/<pid>/stat` CPU fields (`getconf
/// CLK_TCK`). The kernel exports them in USER_HZ, which is 100 on every
/// Linux architecture we run on; hardcoded to need no libc call.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// utime + stime in clock ticks from the text of `/proc/<pid>/stat`. The
/// comm field (2) is in parentheses and may itself contain spaces and
/// parentheses, so the fields are counted from after the last `)`: there
/// field 3 (state) comes first, utime and stime are fields 14 and 15.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds used so far by process `pid` (`None` = this process), all
/// threads including exited ones; `None` when unreadable.
pub fn cpu_s(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    Some(stat_cpu_ticks(&s)? as f64 / CLOCK_TICKS_PER_S)
}

/// Voluntary plus involuntary context switches in the text of a
/// thread's `/proc/<pid>/task/<tid>/status`.
fn status_switches(status: &str) -> Option<u64> {
    let mut sum = None;
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key == "voluntary_ctxt_switches" || key == "nonvoluntary_ctxt_switches" {
            let n: u64 = value.trim().parse().ok()?;
            sum = Some(sum.unwrap_or(0) + n);
        }
    }
    sum
}

/// Context switches of the threads process `pid` has now (the kernel keeps
/// no per-process total that includes exited threads: a part measured with
/// this keeps its connections, and so their threads, open until it is read).
pub fn switches(pid: u32) -> Option<u64> {
    let mut sum = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("status");
        // A thread that ended meanwhile has no status any more.
        if let Ok(text) = std::fs::read_to_string(path) {
            sum += status_switches(&text)?;
        }
    }
    Some(sum)
}

/// CPU times of the bench and the server, and the server's context
/// switches, at the start of a timed part.
pub(super) struct CpuMark {
    client: Option<f64>,
    server_pid: Option<u32>,
    server: Option<f64>,
    server_switches: Option<u64>,
}

impl CpuMark {
    pub(super) fn start(server_pid: Option<u32>) -> CpuMark {
        CpuMark {
            client: cpu_s(None),
            server_pid,
            server: server_pid.and_then(|p| cpu_s(Some(p))),
            server_switches: server_pid.and_then(switches),
        }
    }
    /// Stores the CPU used since [`CpuMark::start`] in `r`.
    pub(super) fn finish(self, r: &mut Report) {
        let since = |then: Option<f64>, now: Option<f64>| Some((now? - then?).max(0.0));
        r.client_cpu_s = since(self.client, cpu_s(None));
        r.server_cpu_s = since(self.server, self.server_pid.and_then(|p| cpu_s(Some(p))));
        let now = self.server_pid.and_then(switches);
        r.server_switches = self
            .server_switches
            .zip(now)
            .map(|(a, b)| b.saturating_sub(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_switches_adds_both_kinds() {
        let status = "Name:\tsmss\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_switches(status), Some(127));
        assert_eq!(status_switches("Name:\tx\n"), None);
        assert_eq!(status_switches("voluntary_ctxt_switches:\tmany\n"), None);
    }

    #[test]
    fn proc_stat_cpu_ticks() {
        // Fields 14 and 15 (utime, stime) are 7 and 5 here.
        let plain = "1234 (smss) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 999";
        assert_eq!(stat_cpu_ticks(plain), Some(12));
        // The comm may hold spaces and parentheses, even a ") " lookalike.
        let odd = "77 (a (b) ) S 9 z) S 1 77 77 0 -1 0 0 0 0 0 250 31 0 0 20 0 1 0 5";
        assert_eq!(stat_cpu_ticks(odd), Some(281));
        let spaced = "5 (bench pub 3) R 1 5 5 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5\n";
        assert_eq!(stat_cpu_ticks(spaced), Some(3));
        for bad in [
            "",
            "no paren at all 1 2 3",
            "1 (x) S 1 2 3",
            "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 5 0",
        ] {
            assert_eq!(stat_cpu_ticks(bad), None, "{bad:?}");
        }
        // This process can read its own.
        assert!(switches(std::process::id()).is_some());
        assert!(cpu_s(None).is_some());
        assert!(cpu_s(Some(std::process::id())).is_some());
    }
}

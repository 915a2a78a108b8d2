//! CPU time of the bench and of the server from `/proc/<pid>/stat`, read
//! around each timed part.

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

/// CPU times of the bench and the server at the start of a timed part.
pub(super) struct CpuMark {
    client: Option<f64>,
    server_pid: Option<u32>,
    server: Option<f64>,
}

impl CpuMark {
    pub(super) fn start(server_pid: Option<u32>) -> CpuMark {
        CpuMark {
            client: cpu_s(None),
            server_pid,
            server: server_pid.and_then(|p| cpu_s(Some(p))),
        }
    }
    /// Stores the CPU used since [`CpuMark::start`] in `r`.
    pub(super) fn finish(self, r: &mut Report) {
        let since = |then: Option<f64>, now: Option<f64>| Some((now? - then?).max(0.0));
        r.client_cpu_s = since(self.client, cpu_s(None));
        r.server_cpu_s = since(self.server, self.server_pid.and_then(|p| cpu_s(Some(p))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(cpu_s(None).is_some());
        assert!(cpu_s(Some(std::process::id())).is_some());
    }
}

//! The figures of one measurement: [`Report`], its `key=value` line and the
//! per-message rates and CPU costs derived from it.

/// Result of one measurement.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub mode: &'static str,
    pub protocol: &'static str,
    pub conns: usize,
    /// `pub`: client threads the connections were spread over (0 = not
    /// reported, other modes).
    pub threads: usize,
    /// Messages asked for.
    pub count: u64,
    /// Messages done (published and acknowledged, or received).
    pub done: u64,
    pub size: usize,
    pub pipeline: usize,
    pub mpub: usize,
    /// `pub --key`: every PUB carried a unique dedup key.
    pub key: bool,
    pub batch: usize,
    pub secs: f64,
    pub errors: u64,
    pub truncated: bool,
    /// Latency percentiles in µs (per request; per batch for `sub`; publish
    /// to delivery for `e2e`).
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// `delay` only: lateness of delivery after the due time, ms.
    pub lateness_ms: Option<[i64; 3]>,
    /// First error text, if any.
    pub note: String,
    /// CPU seconds (user+system) of the bench process during the timed part;
    /// `None` when `/proc/self/stat` could not be read.
    pub client_cpu_s: Option<f64>,
    /// CPU seconds of the server over the same interval; `None` when its PID
    /// is unknown or its `/proc/<pid>/stat` could not be read.
    pub server_cpu_s: Option<f64>,
    /// Context switches of the server's threads over the same interval
    /// (publish rows only).
    pub server_switches: Option<u64>,
}

impl Report {
    pub fn msgs_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.done as f64 / self.secs
        } else {
            0.0
        }
    }
    pub fn mb_per_s(&self) -> f64 {
        self.msgs_per_s() * self.size as f64 / 1e6
    }
    /// CPU µs of the bench per message done.
    pub fn client_us_per_msg(&self) -> Option<f64> {
        self.us_per_msg(self.client_cpu_s)
    }
    /// CPU µs of the server per message done.
    pub fn server_us_per_msg(&self) -> Option<f64> {
        self.us_per_msg(self.server_cpu_s)
    }
    /// The server's context switches per message done.
    pub fn server_switches_per_msg(&self) -> Option<f64> {
        self.server_switches
            .filter(|_| self.done > 0)
            .map(|n| n as f64 / self.done as f64)
    }
    fn us_per_msg(&self, cpu_s: Option<f64>) -> Option<f64> {
        cpu_s
            .filter(|_| self.done > 0)
            .map(|s| s * 1e6 / self.done as f64)
    }

    /// The one `key=value` line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "mode={} protocol={} conns={} count={} done={} size={} pipeline={} mpub={} \
             batch={} secs={:.3} msgs_per_s={:.0} mb_per_s={:.2} p50_us={} p99_us={} \
             p999_us={} errors={} truncated={}",
            self.mode,
            self.protocol,
            self.conns,
            self.count,
            self.done,
            self.size,
            self.pipeline,
            self.mpub,
            self.batch,
            self.secs,
            self.msgs_per_s(),
            self.mb_per_s(),
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.errors,
            u8::from(self.truncated),
        );
        if self.threads > 0 {
            s.push_str(&format!(" threads={}", self.threads));
        }
        if self.key {
            s.push_str(" key=1");
        }
        for (who, cpu, per_msg) in [
            ("client", self.client_cpu_s, self.client_us_per_msg()),
            ("server", self.server_cpu_s, self.server_us_per_msg()),
        ] {
            if let Some(c) = cpu {
                s.push_str(&format!(" {who}_cpu_s={c:.2}"));
            }
            if let Some(u) = per_msg {
                s.push_str(&format!(" {who}_us_per_msg={u:.1}"));
            }
        }
        if let Some(cs) = self.server_switches_per_msg() {
            s.push_str(&format!(" server_cs_per_msg={cs:.2}"));
        }
        if let Some([p50, p99, max]) = self.lateness_ms {
            s.push_str(&format!(
                " lateness_p50_ms={p50} lateness_p99_ms={p99} lateness_max_ms={max}"
            ));
        }
        if !self.note.is_empty() {
            s.push_str(&format!(" note={:?}", self.note));
        }
        s
    }

    pub fn set_latency(&mut self, mut lat: Vec<u64>) {
        lat.sort_unstable();
        self.p50_us = percentile(&lat, 0.50);
        self.p99_us = percentile(&lat, 0.99);
        self.p999_us = percentile(&lat, 0.999);
    }
}

/// Nearest-rank percentile of sorted values (`p` in (0, 1]); 0 when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 0.999), 100);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[7u64], 0.5), 7);
        assert_eq!(percentile::<u64>(&[], 0.5), 0);
        assert_eq!(percentile(&[1i64, 2, 3, 4], 0.5), 2);
        assert_eq!(percentile(&[1i64, 2, 3, 4], 0.51), 3);
        assert_eq!(percentile(&[-3i64, -1], 0.01), -3);
    }

    #[test]
    fn report_line_has_the_figures() {
        let mut r = Report {
            mode: "pub",
            protocol: "smss",
            conns: 2,
            count: 10,
            done: 10,
            size: 200,
            pipeline: 1,
            secs: 2.0,
            ..Report::default()
        };
        r.set_latency((1..=1000).collect());
        let l = r.line();
        for kv in [
            "mode=pub",
            "msgs_per_s=5",
            "mb_per_s=0.00",
            "p50_us=500",
            "p99_us=990",
            "p999_us=999",
            "errors=0",
            "truncated=0",
        ] {
            assert!(l.contains(kv), "{kv} missing in {l}");
        }
    }

    #[test]
    fn report_line_has_cpu_figures_when_known() {
        let mut r = Report {
            mode: "pub",
            done: 200_000,
            threads: 16,
            client_cpu_s: Some(1.5),
            ..Report::default()
        };
        let l = r.line();
        for kv in ["threads=16", "client_cpu_s=1.50", "client_us_per_msg=7.5"] {
            assert!(l.contains(kv), "{kv} missing in {l}");
        }
        assert!(!l.contains("server_"), "{l}");
        r.server_cpu_s = Some(0.5);
        let l = r.line();
        assert!(l.contains("server_cpu_s=0.50 server_us_per_msg=2.5"), "{l}");
        // Nothing done: CPU seconds, but no per-message figure.
        r.done = 0;
        let l = r.line();
        assert!(l.contains("client_cpu_s=1.50"), "{l}");
        assert!(!l.contains("us_per_msg"), "{l}");
        assert_eq!(Report::default().client_us_per_msg(), None);
    }
}

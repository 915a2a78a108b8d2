//! `/`: the status page — one self-contained HTML document (inline CSS and
//! SVG, no script, no external asset) that refreshes itself every few
//! seconds: health, role and epoch, replication (slaves and their lag, or
//! this slave's master), a chart of the publish rate and fsync latency over
//! the last ten minutes, topics with their rates and group lags, delayed
//! messages, disk.
//!
//! Pure rendering over a [`View`] and the [`History`]; runs on the `http`
//! thread.

use std::fmt::Write;
use std::time::Instant;

use super::history::{History, Point, SAMPLE_EVERY, SAMPLES};
use super::view::View;
use crate::stats::{ReplGauges, Stats};

pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";
/// Seconds between the page's own reloads.
const REFRESH_S: u64 = 5;

const STYLE: &str = "
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px;display:flex;align-items:baseline;gap:18px;flex-wrap:wrap}
header h1{font-size:20px;margin:0;letter-spacing:.5px}
header .meta{color:#b8c0cc}
main{padding:16px 24px;display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:16px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:12px 16px}
section.wide{grid-column:1/-1}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.8px;color:#5b6576;margin:0 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;white-space:nowrap}
th{font-weight:600;color:#5b6576;font-size:12px}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;font-size:13px}
.ok{background:#d9f2e3;color:#146c3a}.bad{background:#fde2e1;color:#a1251b}.warn{background:#fff1cc;color:#7a5600}
.kv{display:grid;grid-template-columns:auto 1fr;gap:2px 16px}.kv dt{color:#5b6576}.kv dd{margin:0;font-variant-numeric:tabular-nums}
.bar{height:10px;background:#eceef2;border-radius:5px;overflow:hidden;margin:6px 0}.bar div{height:100%;background:#3b82f6}
.muted{color:#8a93a3}
svg text{font:11px system-ui,sans-serif;fill:#5b6576}
";

fn esc(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{:.1} s", ms as f64 / 1000.0),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86400, (s % 86400) / 3600),
    }
}

fn rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}/s")
    } else {
        format!("{r:.1}/s")
    }
}

/// The whole page. `health`: `/healthz`'s answer without thresholds.
pub fn render(
    v: &View,
    st: &Stats,
    history: &History,
    health: &Result<(), String>,
    now: Instant,
) -> String {
    let mut s = String::with_capacity(16 << 10);
    let g = &v.gauges;
    let role = g.repl.role().as_str();
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>smss {role}</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        s,
        "<header id=\"role\"><h1>smss</h1><span class=\"badge {}\">{role}</span>\
         <span class=\"meta\">epoch {} · last event id {} · up {}</span>",
        if role == "master" { "ok" } else { "warn" },
        g.epoch,
        g.last_event_id,
        duration(g.uptime_ms)
    );
    match health {
        Ok(()) => s.push_str("<span class=\"badge ok\" id=\"health\">healthy</span>"),
        Err(why) => {
            s.push_str("<span class=\"badge bad\" id=\"health\">unhealthy: ");
            esc(&mut s, why);
            s.push_str("</span>");
        }
    }
    s.push_str("</header><main>");
    chart(&mut s, &history.points(now));
    overview(&mut s, v, st);
    replication(&mut s, v);
    disk(&mut s, v, st);
    topics(&mut s, v, history);
    let _ = write!(
        s,
        "</main><p class=\"muted\" style=\"padding:0 24px\">Refreshes every {REFRESH_S} s · \
         <a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a></p></body></html>"
    );
    s
}

fn overview(s: &mut String, v: &View, st: &Stats) {
    let c = |a: &std::sync::atomic::AtomicU64| Stats::get(a);
    let _ = write!(
        s,
        "<section id=\"overview\"><h2>Traffic</h2><dl class=\"kv\">\
         <dt>published</dt><dd>{} messages · {}</dd>\
         <dt>delivered / acked</dt><dd>{} / {}</dd>\
         <dt>connections</dt><dd>{} of {} · {} subscribers</dd>\
         <dt>publish latency</dt><dd>mean {:.2} ms · p99 ≤ {} ms</dd>\
         <dt>fsync latency</dt><dd>mean {:.2} ms · p99 ≤ {} ms · {} fsyncs</dd>\
         <dt>delayed messages</dt><dd id=\"delayed\">{} pending · {} dropped</dd>\
         <dt>dead-lettered</dt><dd>{}</dd></dl></section>",
        c(&st.messages_published),
        bytes(c(&st.published_bytes)),
        c(&st.messages_delivered),
        c(&st.messages_acked),
        c(&st.connections),
        c(&st.connections_max),
        c(&st.subscribers),
        v.publish.mean_seconds() * 1e3,
        v.publish.quantile_bound(0.99) * 1e3,
        v.fsync.mean_seconds() * 1e3,
        v.fsync.quantile_bound(0.99) * 1e3,
        v.fsync.count(),
        c(&st.delayed_pending),
        c(&st.delayed_dropped),
        c(&st.dead_lettered),
    );
}

fn replication(s: &mut String, v: &View) {
    s.push_str("<section id=\"replication\"><h2>Replication</h2>");
    match &v.gauges.repl {
        ReplGauges::Master {
            slaves,
            sync_in_force,
            sync_fallbacks,
            ..
        } => {
            let _ = write!(
                s,
                "<p>{slaves} slave(s) · semi-sync {} · {sync_fallbacks} fall-back(s)</p>",
                if *sync_in_force { "in force" } else { "off" }
            );
            if v.slaves.is_empty() {
                s.push_str("<p class=\"muted\">No slave connected.</p>");
            } else {
                s.push_str("<table><tr><th>slave</th><th>state</th><th class=\"n\">acked id</th><th class=\"n\">lag</th></tr>");
                for sl in &v.slaves {
                    s.push_str("<tr><td>");
                    esc(s, &sl.addr);
                    let _ = write!(
                        s,
                        "</td><td><span class=\"badge {}\">{}</span></td><td class=\"n\">{}</td>\
                         <td class=\"n\">{} events · {}</td></tr>",
                        if sl.state == "streaming" {
                            "ok"
                        } else {
                            "warn"
                        },
                        sl.state,
                        sl.acked_id,
                        sl.lag.events,
                        duration(sl.lag.ms)
                    );
                }
                s.push_str("</table>");
            }
        }
        ReplGauges::Slave {
            master,
            master_event_id,
            lag,
            state,
            reconnects,
            ..
        } => {
            s.push_str("<dl class=\"kv\"><dt>master</dt><dd>");
            esc(s, master);
            let _ = write!(
                s,
                "</dd><dt>link</dt><dd><span class=\"badge {}\">{state}</span></dd>\
                 <dt>master's last id</dt><dd>{master_event_id}</dd>\
                 <dt>lag</dt><dd>{} events · {}</dd><dt>reconnects</dt><dd>{reconnects}</dd></dl>",
                if *state == "streaming" { "ok" } else { "bad" },
                lag.events,
                duration(lag.ms)
            );
        }
    }
    s.push_str("</section>");
}

fn disk(s: &mut String, v: &View, st: &Stats) {
    let used = Stats::get(&st.disk_bytes);
    let _ = write!(
        s,
        "<section id=\"disk\"><h2>Disk</h2><dl class=\"kv\"><dt>log + indexes</dt><dd>{}</dd>\
         <dt>segments</dt><dd>{}</dd>",
        bytes(used),
        v.gauges.segments
    );
    if let Some(d) = v.disk {
        let taken = d.total_bytes.saturating_sub(d.free_bytes);
        let pct = if d.total_bytes > 0 {
            taken as f64 * 100.0 / d.total_bytes as f64
        } else {
            0.0
        };
        let _ = write!(
            s,
            "<dt>file system</dt><dd>{} free of {}</dd></dl>\
             <div class=\"bar\" title=\"{pct:.0}% used\"><div style=\"width:{pct:.1}%;{}\"></div></div>",
            bytes(d.free_bytes),
            bytes(d.total_bytes),
            if pct > 90.0 { "background:#dc2626" } else { "" }
        );
    } else {
        s.push_str("</dl>");
    }
    if v.poisoned {
        s.push_str("<p class=\"badge bad\">writer poisoned: writes refused</p>");
    }
    s.push_str("</section>");
}

fn topics(s: &mut String, v: &View, h: &History) {
    let _ = write!(
        s,
        "<section class=\"wide\" id=\"topics\"><h2>Topics ({})</h2>",
        v.topics.len()
    );
    if v.topics.is_empty() {
        s.push_str("<p class=\"muted\">No topics yet.</p></section>");
        return;
    }
    s.push_str(
        "<table><tr><th>topic</th><th class=\"n\">messages</th><th class=\"n\">rate</th>\
         <th class=\"n\">last id</th><th>groups (lag, subscribers)</th></tr>",
    );
    for t in &v.topics {
        s.push_str("<tr><td>");
        esc(s, &t.name);
        let _ = write!(
            s,
            "</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>",
            t.messages,
            rate(h.topic_rate(&t.name).unwrap_or(0.0)),
            t.last_id
        );
        if t.groups.is_empty() {
            s.push_str("<span class=\"muted\">—</span>");
        }
        for g in &t.groups {
            let lag = g.lag.map_or("?".to_string(), |l| l.to_string());
            let class = match g.lag {
                Some(0) => "ok",
                Some(l) if l < 1000 => "warn",
                _ => "bad",
            };
            let _ = write!(s, "<span class=\"badge {class}\">");
            esc(s, &g.name);
            let _ = match g.members {
                Some(n) => {
                    let plural = if n == 1 { "" } else { "s" };
                    write!(s, ": {lag} behind · shared, {n} member{plural}")
                }
                None if g.active => write!(s, ": {lag} behind · active"),
                None => write!(s, ": {lag} behind · no subscriber"),
            };
            if g.standbys > 0 {
                let _ = write!(s, " +{} standby", g.standbys);
            }
            if g.failures > 0 {
                let _ = write!(s, " · {} failed", g.failures);
            }
            s.push_str("</span> ");
        }
        s.push_str("</td></tr>");
    }
    s.push_str("</table></section>");
}

const W: f64 = 560.0;
const H: f64 = 90.0;
const LEFT: f64 = 56.0;

/// Two stacked panels: messages/s and fsync latency (mean and p99), over
/// the ring's span, newest on the right.
fn chart(s: &mut String, points: &[Point]) {
    let span = SAMPLE_EVERY.as_secs_f64() * SAMPLES as f64;
    let _ = write!(
        s,
        "<section class=\"wide\" id=\"chart\"><h2>Last {} minutes</h2>",
        span as u64 / 60
    );
    if points.is_empty() {
        s.push_str("<p class=\"muted\">Collecting samples (one every 5 s)…</p></section>");
        return;
    }
    let total_h = 2.0 * H + 60.0;
    let _ = write!(
        s,
        "<svg viewBox=\"0 0 {} {total_h}\" width=\"100%\" style=\"max-width:900px\" role=\"img\" \
         aria-label=\"publish rate and fsync latency\">",
        LEFT + W + 90.0
    );
    let rates: Vec<(f64, f64)> = points.iter().map(|p| (p.ago_s, p.rate)).collect();
    let max_rate = rates.iter().map(|p| p.1).fold(0.0, f64::max);
    panel(
        s,
        10.0,
        "messages/s",
        &[(&rates, "#3b82f6", true)],
        max_rate,
        span,
        |v| format!("{v:.0}"),
    );
    let mean: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.ago_s, p.fsync_mean_s * 1e3))
        .collect();
    let p99: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.ago_s, p.fsync_p99_s * 1e3))
        .collect();
    let max_ms = p99.iter().chain(&mean).map(|p| p.1).fold(0.0, f64::max);
    panel(
        s,
        H + 40.0,
        "fsync ms",
        &[(&p99, "#f59e0b", false), (&mean, "#16a34a", false)],
        max_ms,
        span,
        |v| format!("{v:.2}"),
    );
    let x = LEFT + W + 10.0;
    let _ = write!(
        s,
        "<text x=\"{x}\" y=\"{}\" style=\"fill:#16a34a\">— mean</text>\
         <text x=\"{x}\" y=\"{}\" style=\"fill:#f59e0b\">— p99 (≤)</text>",
        H + 74.0,
        H + 90.0
    );
    for (i, label) in ["-10 min", "-5 min", "now"].iter().enumerate() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            LEFT + W * i as f64 / 2.0,
            total_h - 4.0
        );
    }
    s.push_str("</svg></section>");
}

type Series<'a> = (&'a [(f64, f64)], &'a str, bool);

fn panel(
    s: &mut String,
    top: f64,
    title: &str,
    series: &[Series<'_>],
    max: f64,
    span: f64,
    fmt: impl Fn(f64) -> String,
) {
    let max = if max > 0.0 { max * 1.1 } else { 1.0 };
    let _ = write!(
        s,
        "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{W}\" height=\"{H}\" fill=\"#fafbfc\" stroke=\"#eceef2\"/>\
         <line x1=\"{LEFT}\" y1=\"{mid}\" x2=\"{}\" y2=\"{mid}\" stroke=\"#eceef2\" stroke-dasharray=\"3 3\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\
         <text x=\"{}\" y=\"{}\" style=\"font-weight:600\">{title}</text>",
        LEFT + W,
        LEFT - 6.0,
        top + 10.0,
        fmt(max),
        LEFT - 6.0,
        top + H,
        LEFT + W + 10.0,
        top + 14.0,
        mid = top + H / 2.0,
    );
    for (points, color, fill) in series {
        let mut line = String::new();
        for (ago, v) in points.iter() {
            let x = LEFT + W * (1.0 - (ago / span).min(1.0));
            let y = top + H - H * (v / max).min(1.0);
            let _ = write!(line, "{x:.1},{y:.1} ");
        }
        if *fill && let (Some(first), Some(last)) = (points.first(), points.last()) {
            let x0 = LEFT + W * (1.0 - (first.0 / span).min(1.0));
            let x1 = LEFT + W * (1.0 - (last.0 / span).min(1.0));
            let _ = write!(
                s,
                "<polygon points=\"{x0:.1},{b} {line}{x1:.1},{b}\" fill=\"{color}\" fill-opacity=\"0.15\"/>",
                b = top + H
            );
        }
        let _ = write!(
            s,
            "<polyline points=\"{line}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\"/>"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_units() {
        let mut s = String::new();
        esc(&mut s, "<a href=\"x\">&'");
        assert_eq!(s, "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration(1500), "1.5 s");
        assert_eq!(duration(125_000), "2 min 5 s");
    }
}

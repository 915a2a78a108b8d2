//! The `http:` section: the monitoring listener (`/metrics`, `/healthz`,
//! the status page) — whether it runs, where it listens, and whether
//! `/healthz` needs the token too.
//!
//! Owns [`HttpConfig`] (validated, and the section's YAML shape, read like
//! every section: see `config/de.rs`). Read once at
//! start on the main thread, like the rest of the config; the `http`
//! thread ([`crate::http`]) only reads it.
//!
//! Off is `enabled: false` rather than a magic port (`port: -1`): a port is
//! a number between 0 and 65535 everywhere else in this file, and `0`
//! already means "the OS picks" (tests use it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize};

use super::de;

/// The port the HTTP listener uses unless told otherwise; the protocol
/// port is 12301, a slave on the same machine uses 12382 (config/slave.yaml).
pub const DEFAULT_HTTP_PORT: u16 = 12380;

/// `http:` — the monitoring endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpConfig {
    /// `http.enabled`: false = no HTTP thread, no port.
    pub enabled: bool,
    /// `http.bind`: default 127.0.0.1 (the metrics name topics and groups).
    #[serde(deserialize_with = "bind")]
    pub bind: IpAddr,
    /// `http.port`: 0 = the OS picks one (printed as `HTTP <addr>`).
    #[serde(deserialize_with = "port")]
    pub port: u16,
    /// `http.healthAuth`: with `auth.token`, `/healthz` needs the bearer
    /// token as well (it is open by default, for load balancers).
    pub health_auth: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_HTTP_PORT,
            health_auth: false,
        }
    }
}

impl HttpConfig {
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

/// `http.port`: 0–65535.
fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let p = u64::deserialize(d)?;
    match u16::try_from(p) {
        Ok(p) => Ok(p),
        Err(_) => de::refuse(
            "http.port",
            format!("must be between 0 and 65535, got {p} (enabled: false turns HTTP off)"),
            DEFAULT_HTTP_PORT,
        ),
    }
}

/// `http.bind`: an IP address.
fn bind<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let s = String::deserialize(d)?;
    match s.trim().parse::<IpAddr>() {
        Ok(ip) => Ok(ip),
        Err(_) => de::refuse(
            "http.bind",
            format!("must be an IP address such as 127.0.0.1 or ::1, got {s:?}"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn defaults_and_keys() {
        let c = Config::from_yaml("").expect("defaults");
        assert!(c.http.enabled);
        assert_eq!(c.http.listen_addr().to_string(), "127.0.0.1:12380");
        assert!(!c.http.health_auth);
        let c =
            Config::from_yaml("http: { enabled: false, bind: \"::1\", port: 0, healthAuth: true }")
                .expect("set");
        assert!(!c.http.enabled);
        assert_eq!(c.http.listen_addr().to_string(), "[::1]:0");
        assert!(c.http.health_auth);
    }

    #[test]
    fn bad_values_name_the_key() {
        for y in ["http: { port: 70000 }", "http: { bind: localhost }"] {
            let e = Config::from_yaml(y).expect_err(y).to_string();
            assert!(e.contains("http."), "{e}");
        }
        assert!(Config::from_yaml("http: { listen: 1 }").is_err());
    }
}

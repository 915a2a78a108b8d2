//! The `tls:` section: the TLS client port, its certificate and key, the
//! optional CA that client certificates must chain to, and whether the
//! plain port is closed.
//!
//! Owns [`TlsConfig`] (validated, and the section's YAML shape, read like
//! every section: see `config/de.rs`). Read once at start like the rest of
//! the config; the files it names are read by [`crate::tls`] at start and
//! again on SIGHUP (so a renewed certificate is taken without a restart).
//!
//! TLS is on when `tls.cert` is set: a port number alone would not say
//! which certificate to serve.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::error::{ConfigError, invalid};

/// The TLS port unless told otherwise (the plain one is 12301).
pub const DEFAULT_TLS_PORT: u16 = 12443;

/// `tls:` — encrypted client connections (feature `tls`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// `tls.port`: 0 = the OS picks one (printed as `TLS <addr>`).
    #[serde(deserialize_with = "port")]
    pub port: u16,
    /// `tls.cert`: the server's certificate chain (PEM), leaf first. Empty
    /// = no TLS port.
    #[serde(deserialize_with = "path")]
    pub cert: Option<PathBuf>,
    /// `tls.key`: the certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(deserialize_with = "path")]
    pub key: Option<PathBuf>,
    /// `tls.clientCa`: when set, a client must present a certificate that
    /// chains to one of these CA certificates (PEM) — mutual TLS.
    #[serde(deserialize_with = "path")]
    pub client_ca: Option<PathBuf>,
    /// `tls.only`: no plain listener at all; `READY` then names the TLS port.
    pub only: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            port: DEFAULT_TLS_PORT,
            cert: None,
            key: None,
            client_ca: None,
            only: false,
        }
    }
}

impl TlsConfig {
    /// True when a TLS listener is configured.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert, &self.key) {
            (Some(_), None) => Err(invalid("tls.key", "tls.cert is set: set tls.key too")),
            (None, Some(_)) => Err(invalid("tls.cert", "tls.key is set: set tls.cert too")),
            (None, _) if self.only => Err(invalid("tls.only", "needs tls.cert and tls.key")),
            (None, _) if self.client_ca.is_some() => Err(invalid(
                "tls.clientCa",
                "needs tls.cert and tls.key (client certificates are asked on the TLS port)",
            )),
            _ => Ok(()),
        }
    }
}

/// `tls.port`: 0–65535.
fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let p = u64::deserialize(d)?;
    match u16::try_from(p) {
        Ok(p) => Ok(p),
        Err(_) => super::de::refuse(
            "tls.port",
            format!("must be between 0 and 65535, got {p}"),
            0,
        ),
    }
}

/// A file path; empty is not set.
pub(super) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .filter(|p| !p.trim().is_empty())
        .map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_and_key_go_together() {
        let d = TlsConfig::default();
        assert!(d.validate().is_ok() && !d.enabled());
        let with = |cert: bool, key: bool, only: bool| TlsConfig {
            cert: cert.then(|| "c.pem".into()),
            key: key.then(|| "k.pem".into()),
            only,
            ..TlsConfig::default()
        };
        assert!(with(true, true, true).validate().is_ok());
        assert!(with(true, false, false).validate().is_err());
        assert!(with(false, true, false).validate().is_err());
        assert!(with(false, false, true).validate().is_err());
    }
}

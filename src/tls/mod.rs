//! TLS (feature `tls`): the server's certificate and key, read from PEM
//! files at start and again on SIGHUP; the handshake of a connection that
//! came in on the TLS port; and the client side (a CA to verify the server
//! against, optionally a certificate of its own) used by [`crate::client`],
//! `smss-cli --tls` and the slave's link to its master.
//!
//! Owns [`ServerTls`]: the current `rustls::ServerConfig` behind a lock
//! that the acceptor's connection threads read (one `Arc` clone per
//! handshake) and the `signals` thread replaces on SIGHUP. Nothing else is
//! shared. A handshake runs on the new connection's own thread, never on
//! the acceptor, so a client that stalls mid-handshake holds up no one.
//!
//! rustls runs over our blocking sockets as is (`StreamOwned`): no async
//! runtime. The ring provider is named explicitly rather than installed as
//! the process default, so nothing depends on start-up order.

mod expiry;
mod shared;

#[cfg(test)]
pub(crate) use shared::test_pair;
pub use shared::{Sealer, SharedReader, SharedWriter, split};

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use crate::config::TlsConfig;

/// A TLS session over a connection's socket, server side.
pub type ServerStream = rustls::StreamOwned<ServerConnection, TcpStream>;
/// A TLS session over a socket, client side.
pub type ClientStream = rustls::StreamOwned<ClientConnection, TcpStream>;

/// How long a client gets to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ring provider (DESIGN.md: small, no C build system needed).
/// rustls 0.23.48 deprecates it for lacking post-quantum key exchange,
/// which only the aws-lc-rs provider has; classic X25519/P-256 is what
/// every client here speaks.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (a chain, or a CA bundle), naming the
/// file in every error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{}: no usable PEM private key in it: {e}", path.display()))
}

/// A root store holding every certificate of a CA file.
fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Builds the server side from the files `cfg` names. Also returns a
/// warning when the certificate is expired or not yet valid (served all
/// the same: the operator decides, the log says why clients refuse).
fn server_config(cfg: &TlsConfig) -> Result<(ServerConfig, Option<String>), String> {
    let (Some(cert_path), Some(key_path)) = (&cfg.cert, &cfg.key) else {
        return Err("tls.cert and tls.key must both be set".into());
    };
    let certs = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let warning = certs
        .first()
        .and_then(|leaf| expiry::warning(leaf, crate::storage::now_ms() / 1000))
        .map(|w| format!("{}: {w}", cert_path.display()));
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider())
                    .build()
                    .map_err(|e| format!("{}: cannot verify clients with it: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "{} and {}: the key does not go with the certificate, or one is unusable: {e}",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok((config, warning))
}

/// The TLS port's current configuration; replaced whole on SIGHUP.
pub struct ServerTls {
    cfg: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads the files; `Err` names the file at fault. The second value is
    /// a warning to log (an expired certificate).
    pub fn load(cfg: &TlsConfig) -> Result<(ServerTls, Option<String>), String> {
        let (config, warning) = server_config(cfg)?;
        let tls = ServerTls {
            cfg: cfg.clone(),
            current: RwLock::new(Arc::new(config)),
        };
        Ok((tls, warning))
    }

    /// SIGHUP: reads the files again. On error the old configuration
    /// stays in force (connections keep working) and the error says why.
    pub fn reload(&self) -> Result<Option<String>, String> {
        let (config, warning) = server_config(&self.cfg)?;
        // A poisoned lock holds a plain Arc: replace it all the same.
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        *cur = Arc::new(config);
        Ok(warning)
    }

    /// Runs the handshake of a connection accepted on the TLS port, on its
    /// own thread, within [`HANDSHAKE_TIMEOUT`]. `Err` says why it failed
    /// (a plain-text client, an unknown CA, no client certificate, ...).
    pub fn accept(&self, mut tcp: TcpStream) -> Result<ServerStream, String> {
        let config = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
        let mut conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        handshake(&mut conn, &mut tcp).map_err(|e| describe(&e))?;
        tcp.set_read_timeout(None).map_err(|e| e.to_string())?;
        Ok(rustls::StreamOwned::new(conn, tcp))
    }
}

/// Drives a handshake to its end. On failure, rustls has queued an alert
/// for the peer: it is sent (best effort) so the peer learns why.
fn handshake<S: rustls::SideData>(
    conn: &mut rustls::ConnectionCommon<S>,
    tcp: &mut TcpStream,
) -> io::Result<()> {
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(tcp) {
            while conn.wants_write() {
                if conn.write_tls(tcp).is_err() {
                    break;
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

/// A handshake error in words an operator can act on.
fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    if text.contains("InvalidContentType") || text.contains("corrupt message") {
        "not a TLS client (plain text on the TLS port?)".into()
    } else if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        format!("no handshake within {HANDSHAKE_TIMEOUT:?}")
    } else {
        text
    }
}

/// A client side: verifies servers against the CA(s) in `ca`; presents
/// `identity` (certificate, key) when the server asks for one.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(load_roots(ca)?);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| {
                format!(
                    "{} and {}: not a usable certificate and key: {e}",
                    cert.display(),
                    key.display()
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Opens a TLS session over a connected socket to `host` (the name, or IP
/// address, the server's certificate must carry), handshake included, so a
/// wrong CA or a refused client certificate fails here and not at the
/// first request.
pub fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    mut tcp: TcpStream,
) -> io::Result<ClientStream> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?}: {e}")))?;
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    handshake(&mut conn, &mut tcp)?;
    // With TLS 1.3 a server that refuses the client's certificate says so
    // after the client's handshake ends: the client sees it as an error on
    // its first read (the first reply), not here.
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// The host part of `HOST:PORT` (brackets of an IPv6 address removed).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

//! TLS on the client port: rustls, certificates reloaded when their files change, and optional
//! mutual TLS whose client-certificate identities feed [`crate::auth`].
//!
//! Why reload by polling: certificates are rotated by tools (cert-manager, certbot, a secret
//! mount) that replace files in place or by rename; checking a digest of the file contents
//! every `tls.reload_interval_ms` catches both without platform-specific watchers. A new
//! configuration is built completely before it replaces the old one, so a half-written or
//! mismatched pair is logged, counted (`timelock_tls_reloads_total{result="error"}`) and
//! ignored: the server keeps serving with the last good certificate. Existing connections keep
//! the configuration they started with; new handshakes use the new one.
//!
//! A client certificate's identities are its subject common names and its DNS subject
//! alternative names; they are attached to every request on the connection as
//! [`crate::auth::CertificateIdentity`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

use crate::config::TlsSettings;
use crate::metrics::GuardMetrics;

/// Installs ring as the process's rustls provider (the HTTPS client of the CLI uses it too).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The current server configuration, and what it was built from.
pub struct TlsSource {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
    /// Digest of the files the current configuration was built from.
    built_from: Mutex<[u8; 32]>,
    metrics: GuardMetrics,
}

fn files(settings: &TlsSettings) -> Vec<&Path> {
    let mut files = vec![settings.cert_file.as_path(), settings.key_file.as_path()];
    if !settings.client_ca_file.as_os_str().is_empty() {
        files.push(settings.client_ca_file.as_path());
    }
    files
}

/// A digest of the contents of every file the configuration depends on.
fn fingerprint(settings: &TlsSettings) -> Result<[u8; 32], String> {
    let mut hash = Sha256::new();
    for file in files(settings) {
        let bytes =
            std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(hash.finalize().into())
}

fn certificates(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(certs)
}

/// Builds a complete server configuration from the files.
fn build(settings: &TlsSettings) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&settings.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|e| {
        format!(
            "cannot read a private key from {}: {e}",
            settings.key_file.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let builder = if settings.client_ca_file.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(&settings.client_ca_file)? {
            roots.add(ca).map_err(|e| {
                format!(
                    "bad CA certificate in {}: {e}",
                    settings.client_ca_file.display()
                )
            })?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if settings.client_auth == "optional" {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        builder.with_client_cert_verifier(
            verifier
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?,
        )
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "certificate {} and key {} do not make a usable pair: {e}",
            settings.cert_file.display(),
            settings.key_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl TlsSource {
    /// Reads the files and builds the first configuration; errors stop the start-up.
    pub fn load(settings: &TlsSettings, metrics: GuardMetrics) -> anyhow::Result<Arc<Self>> {
        install_crypto_provider();
        let digest = fingerprint(settings).map_err(anyhow::Error::msg)?;
        let config = build(settings).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(Self {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
            built_from: Mutex::new(digest),
            metrics,
        }))
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().clone())
    }

    /// Rebuilds the configuration if the files changed since the last build. Returns whether
    /// a new configuration is now in use.
    pub fn reload_if_changed(&self) -> bool {
        let digest = match fingerprint(&self.settings) {
            Ok(d) => d,
            Err(e) => {
                // Mid-rotation (a file briefly missing): try again next time.
                tracing::warn!(error = %e, "TLS files unreadable; keeping the current certificate");
                return false;
            }
        };
        if *self.built_from.lock() == digest {
            return false;
        }
        match build(&self.settings) {
            Ok(config) => {
                *self.current.write() = Arc::new(config);
                *self.built_from.lock() = digest;
                self.metrics.tls_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(cert = %self.settings.cert_file.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Remember the bad digest so the error is logged once per change, not per tick.
                *self.built_from.lock() = digest;
                self.metrics.tls_reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "new TLS files rejected; keeping the current certificate");
                false
            }
        }
    }

    /// Checks the files every `tls.reload_interval_ms`, for ever.
    pub async fn watch(self: Arc<Self>) {
        let every = Duration::from_millis(self.settings.reload_interval_ms);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let source = self.clone();
            let _ = tokio::task::spawn_blocking(move || source.reload_if_changed()).await;
        }
    }
}

/// The identities of a client certificate: subject common names and DNS alternative names.
pub fn identities(certificate: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(certificate.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    names
}

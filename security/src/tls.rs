//! The rustls settings of each end: a node's server side ([`ServerTls`]: its own
//! certificate, and every caller must present one of the cluster's CA) and a caller's
//! side ([`ClientTls`]: the CA a node's certificate must chain to, and the caller's own
//! certificate). Both read their files again on [`reload`](ServerTls::reload): new
//! connections use the new certificates, open ones keep theirs.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::{expires, read_certificates, read_private_key};
use crate::{Identity, SecurityError, TlsFiles};

/// gRPC runs on HTTP/2, which TLS peers agree on by ALPN (gRPC's own clients insist).
const ALPN_HTTP2: &[u8] = b"h2";
/// The node's HTTP port also speaks HTTP/1.1 (Prometheus scrapes, probes, curl).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What a listener serves, which decides the protocols its TLS offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// The HTTP port: HTTP/2 or HTTP/1.1.
    Http,
}

/// ring's algorithms: its build needs no cmake or C++ toolchain (aws-lc-rs, rustls's
/// preferred provider, does), and its curves and suites cover TLS 1.2 and 1.3 with
/// ECDSA; rustls marks it deprecated only for lacking post-quantum key exchange.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA certificates of `files`, which a peer's certificate must chain to.
fn read_roots(files: &TlsFiles) -> Result<Arc<RootCertStore>, SecurityError> {
    let mut roots = RootCertStore::empty();
    for ca in read_certificates(&files.ca)? {
        roots.add(ca).map_err(|e| SecurityError::BadFile {
            path: files.ca.clone(),
            detail: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

fn with_alpn(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![ALPN_HTTP2.to_vec()];
    config
}

/// A caller's settings without a certificate of its own (it logs in, or sends a token).
fn anonymous_client_config(files: &TlsFiles) -> Result<ClientConfig, SecurityError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SecurityError::Tls(e.to_string()))?
        .with_root_certificates(read_roots(files)?)
        .with_no_client_auth();
    Ok(with_alpn(config))
}

/// Everything one end's settings are made of, read and checked.
struct Material {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Material {
    /// Reads `files`; the certificate must name `identity`.
    fn read(files: &TlsFiles, identity: &Identity) -> Result<Material, SecurityError> {
        let roots = read_roots(files)?;
        let chain = read_certificates(&files.cert)?;
        let named =
            Identity::of_certificate(&chain[0]).map_err(|detail| SecurityError::BadFile {
                path: files.cert.clone(),
                detail,
            })?;
        if &named != identity {
            return Err(SecurityError::WrongIdentity {
                path: files.cert.clone(),
                expected: identity.to_string(),
                found: named.to_string(),
            });
        }
        let key = read_private_key(&files.key)?;
        Ok(Material { roots, chain, key })
    }

    fn server_config(self) -> Result<ServerConfig, SecurityError> {
        let tls = |e: rustls::Error| SecurityError::Tls(e.to_string());
        // A caller without a certificate may connect: it can only log in, or send a
        // token (the node's request layer decides; see `Caller::Anonymous`).
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| SecurityError::Tls(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain, self.key)
            .map_err(tls)?;
        config.alpn_protocols = vec![ALPN_HTTP2.to_vec()];
        Ok(config)
    }

    fn client_config(self) -> Result<ClientConfig, SecurityError> {
        let tls = |e: rustls::Error| SecurityError::Tls(e.to_string());
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_root_certificates(self.roots)
            .with_client_auth_cert(self.chain, self.key)
            .map_err(tls)?;
        Ok(with_alpn(config))
    }
}

/// A node's TLS settings as a server.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    node: u64,
    current: RwLock<ServerConfigs>,
}

/// A node's server settings for each [`Protocol`], and when their certificate expires.
#[derive(Debug)]
struct ServerConfigs {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    expires: SystemTime,
}

impl ServerTls {
    /// Reads node `node`'s files; its certificate must name it.
    pub fn load(files: TlsFiles, node: u64) -> Result<Arc<ServerTls>, SecurityError> {
        let current = Self::read(&files, node)?;
        Ok(Arc::new(ServerTls {
            files,
            node,
            current: RwLock::new(current),
        }))
    }

    fn read(files: &TlsFiles, node: u64) -> Result<ServerConfigs, SecurityError> {
        let material = Material::read(files, &Identity::Node(node))?;
        let expires = expires(&material.chain[0]).unwrap_or(SystemTime::UNIX_EPOCH);
        let grpc = material.server_config()?;
        let mut http = grpc.clone();
        http.alpn_protocols = vec![ALPN_HTTP2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(ServerConfigs {
            grpc: Arc::new(grpc),
            http: Arc::new(http),
            expires,
        })
    }

    /// Reads the files again; on an error the settings stay as they were.
    pub fn reload(&self) -> Result<(), SecurityError> {
        let current = Self::read(&self.files, self.node)?;
        *self.current.write().expect("tls settings lock") = current;
        Ok(())
    }

    /// The settings new connections for `protocol` use.
    pub fn config(&self, protocol: Protocol) -> Arc<ServerConfig> {
        let current = self.current.read().expect("tls settings lock");
        match protocol {
            Protocol::Grpc => current.grpc.clone(),
            Protocol::Http => current.http.clone(),
        }
    }

    /// When the certificate new connections are served with expires.
    pub fn expires(&self) -> SystemTime {
        self.current.read().expect("tls settings lock").expires
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// A caller's TLS settings: a node's towards its peers, or a client's.
#[derive(Debug)]
pub struct ClientTls {
    files: TlsFiles,
    /// Whom the caller's certificate names; `None`: it has none.
    identity: Option<Identity>,
    config: RwLock<Arc<ClientConfig>>,
}

impl ClientTls {
    /// Reads the files of `identity`; its certificate must name it.
    pub fn load(files: TlsFiles, identity: Identity) -> Result<Arc<ClientTls>, SecurityError> {
        Self::with_identity(files, Some(identity))
    }

    /// Settings with the cluster's CA only (`files.ca`): for a client that logs in, or
    /// sends a token, instead of showing a certificate.
    pub fn without_certificate(files: TlsFiles) -> Result<Arc<ClientTls>, SecurityError> {
        Self::with_identity(files, None)
    }

    fn with_identity(
        files: TlsFiles,
        identity: Option<Identity>,
    ) -> Result<Arc<ClientTls>, SecurityError> {
        let config = Self::read(&files, identity.as_ref())?;
        Ok(Arc::new(ClientTls {
            files,
            identity,
            config: RwLock::new(Arc::new(config)),
        }))
    }

    fn read(files: &TlsFiles, identity: Option<&Identity>) -> Result<ClientConfig, SecurityError> {
        match identity {
            Some(identity) => Material::read(files, identity)?.client_config(),
            None => anonymous_client_config(files),
        }
    }

    /// Reads the files again; on an error the settings stay as they were.
    pub fn reload(&self) -> Result<(), SecurityError> {
        let config = Self::read(&self.files, self.identity.as_ref())?;
        *self.config.write().expect("tls settings lock") = Arc::new(config);
        Ok(())
    }

    /// The settings new connections use.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.read().expect("tls settings lock").clone()
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

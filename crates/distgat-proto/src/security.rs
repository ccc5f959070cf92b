//! TLS and bearer tokens: the one small configuration type the coordinator, the workers
//! and the clients share ([`TlsFiles`], loaded into [`Tls`]), the client-side token
//! interceptor ([`Bearer`]) and the server-side check ([`TokenCheck`]).
//!
//! Policy (documented in docs/architecture.md, "Security"):
//! - A server (coordinator or worker) with TLS needs all of `--tls-cert`, `--tls-key` and
//!   `--tls-ca`: each side also calls the other and verifies its certificate against the CA.
//!   It then speaks TLS only. Client certificates are verified against the CA when
//!   presented; the worker-facing RPCs (the Worker and HaloExchange services, and the
//!   coordinator's RegisterWorker, Heartbeat, PushOutput, FetchShard and FetchInputs)
//!   refuse a caller without one.
//!   Client-API callers (CLI, Rust and Python clients) need no certificate.
//! - With a token, every Coordinator-service RPC needs `authorization: Bearer <token>`
//!   (workers send it too); health and reflection stay open for probes.

use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// What went wrong with a TLS flag, a token or an address; every message names the flag
/// and the file.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// `flag` is how the user gave the setting (see [`TlsNames`]).
    #[error("{flag} {}: {error}", path.display())]
    Read {
        flag: String,
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file has no usable PEM block of the kind the flag needs.
    #[error("{flag} {}: {detail}", path.display())]
    Pem {
        flag: String,
        path: PathBuf,
        detail: String,
    },
    /// Settings that need another one were given without it. `given` names them as the
    /// user gave them ([`TlsNames`]); `missing` names the setting's flag and variable.
    #[error("{} given without {missing}: {why}", given_phrase(given))]
    Missing {
        given: Vec<String>,
        missing: &'static str,
        why: &'static str,
    },
    /// The certificate, key and CA do not make a TLS configuration (e.g. the key does not
    /// belong to the certificate).
    #[error("{cert_name} {} / {key_name} {}: {detail}", cert.display(), key.display())]
    Identity {
        cert_name: String,
        cert: PathBuf,
        key_name: String,
        key: PathBuf,
        detail: String,
    },
    /// The name to expect in the server's certificate is neither a DNS name nor an IP
    /// address. `flag` is how the user gave it ([`TlsNames`]).
    #[error("{flag} '{domain}': not a DNS name or an IP address ({detail})")]
    Domain {
        flag: String,
        domain: String,
        detail: String,
    },
    #[error("--auth-token-file {}: {detail}", path.display())]
    Token { path: PathBuf, detail: String },
    #[error("address '{address}': {detail}")]
    Address { address: String, detail: String },
}

/// "A was" or "A and B were".
fn given_phrase(given: &[String]) -> String {
    match given {
        [one] => format!("{one} was"),
        _ => format!("{} were", given.join(" and ")),
    }
}

/// How the user gave each TLS setting, as error messages name it: the flag
/// (`--tls-cert`), the environment variable (`DISTGAT_TLS_CERT`) or the config file's key
/// (`config file distgat.toml: worker.tls_cert`). `Default` names the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsNames {
    /// How `cert` was given.
    pub cert: String,
    /// How `key` was given.
    pub key: String,
    /// How `ca` was given.
    pub ca: String,
    /// How `domain` was given.
    pub domain: String,
}

impl Default for TlsNames {
    fn default() -> Self {
        TlsNames {
            cert: "--tls-cert".into(),
            key: "--tls-key".into(),
            ca: "--tls-ca".into(),
            domain: "--tls-domain".into(),
        }
    }
}

/// PEM files for TLS, as the `--tls-cert`, `--tls-key`, `--tls-ca` and `--tls-domain`
/// flags name them. `Default` is no TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// This side's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The CA certificate(s) (PEM) the other side's certificate must be signed by.
    pub ca: Option<PathBuf>,
    /// The name to expect in the server's certificate, when it differs from the host of
    /// the address (clients only).
    pub domain: Option<String>,
    /// How each was given, for error messages.
    pub names: TlsNames,
}

/// Loaded TLS material: cheap to clone, ready for servers and channels.
#[derive(Debug, Clone)]
pub struct Tls {
    identity: Option<Identity>,
    ca: Certificate,
    domain: Option<String>,
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|error| SecurityError::Read {
        flag: flag.into(),
        path: path.to_path_buf(),
        error,
    })
}

fn pem_certs(flag: &str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    let bytes = read(flag, path)?;
    let certs = rustls_pemfile::certs(&mut &bytes[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecurityError::Pem {
            flag: flag.into(),
            path: path.to_path_buf(),
            detail: format!("not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(SecurityError::Pem {
            flag: flag.into(),
            path: path.to_path_buf(),
            detail: "no CERTIFICATE block found (a PEM certificate is expected)".into(),
        });
    }
    Ok(bytes)
}

fn pem_key(flag: &str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    let bytes = read(flag, path)?;
    match rustls_pemfile::private_key(&mut &bytes[..]) {
        Ok(Some(_)) => Ok(bytes),
        Ok(None) => Err(SecurityError::Pem {
            flag: flag.into(),
            path: path.to_path_buf(),
            detail: "no PRIVATE KEY block found (a PEM private key is expected)".into(),
        }),
        Err(e) => Err(SecurityError::Pem {
            flag: flag.into(),
            path: path.to_path_buf(),
            detail: format!("not valid PEM: {e}"),
        }),
    }
}

/// The error and its causes, one after the other (tonic's own text is only "transport
/// error"); each cause's text once (rustls errors repeat their cause's).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // rustls errors repeat their cause's text; keep each once.
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

impl TlsFiles {
    /// Whether any TLS flag was given.
    pub fn is_set(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.ca.is_some() || self.domain.is_some()
    }

    fn identity(&self) -> Result<Option<(Identity, &Path, &Path)>, SecurityError> {
        match (&self.cert, &self.key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(SecurityError::Missing {
                given: vec![self.names.cert.clone()],
                missing: "its private key (--tls-key, DISTGAT_TLS_KEY or a config file's tls_key)",
                why: "a certificate needs its private key",
            }),
            (None, Some(_)) => Err(SecurityError::Missing {
                given: vec![self.names.key.clone()],
                missing:
                    "its certificate (--tls-cert, DISTGAT_TLS_CERT or a config file's tls_cert)",
                why: "a private key needs its certificate",
            }),
            (Some(cert), Some(key)) => Ok(Some((
                Identity::from_pem(
                    pem_certs(&self.names.cert, cert)?,
                    pem_key(&self.names.key, key)?,
                ),
                cert,
                key,
            ))),
        }
    }

    /// Loads the files of a server (coordinator or worker). `None` when no flag is given
    /// (plaintext). With TLS all of cert, key and CA are required: the coordinator and
    /// the workers call each other and verify each other's certificate against the CA.
    /// Errors name the flag and the file: unreadable, not PEM, a key that does not match
    /// its certificate, or a missing partner flag.
    pub fn load_server(&self) -> Result<Option<Tls>, SecurityError> {
        if !self.is_set() {
            return Ok(None);
        }
        if self.domain.is_some() {
            return Err(SecurityError::Missing {
                given: vec![self.names.domain.clone()],
                missing: "a client subcommand",
                why: "it names the server's certificate for clients; servers do not take it",
            });
        }
        let (identity, cert, key) = self.identity()?.ok_or_else(|| SecurityError::Missing {
            given: vec![self.names.ca.clone()],
            missing: "a certificate and key (--tls-cert and --tls-key, DISTGAT_TLS_CERT and \
                      DISTGAT_TLS_KEY, or a config file's tls_cert and tls_key)",
            why: "a server needs its own certificate and key to speak TLS",
        })?;
        let ca = self.ca.as_deref().ok_or_else(|| SecurityError::Missing {
            given: vec![self.names.cert.clone(), self.names.key.clone()],
            missing: "a CA (--tls-ca, DISTGAT_TLS_CA or a config file's tls_ca)",
            why: "the coordinator and the workers call each other and verify each other's \
                  certificate against the CA",
        })?;
        let tls = Tls {
            identity: Some(identity),
            ca: Certificate::from_pem(pem_certs(&self.names.ca, ca)?),
            domain: None,
        };
        // Build both sides once now, so a key that does not match its certificate is an
        // error at start-up that names both files, not a failed handshake later.
        let invalid = |e: tonic::transport::Error| SecurityError::Identity {
            cert_name: self.names.cert.clone(),
            cert: cert.to_path_buf(),
            key_name: self.names.key.clone(),
            key: key.to_path_buf(),
            detail: error_chain(&e),
        };
        tonic::transport::Server::builder()
            .tls_config(tls.server_config())
            .map_err(invalid)?;
        tonic::transport::Endpoint::from_static("https://localhost")
            .tls_config(tls.client_config())
            .map_err(invalid)?;
        Ok(Some(tls))
    }

    /// Loads the files of a client. `None` when no flag is given. TLS needs `--tls-ca`
    /// (this build trusts no system roots); `--tls-cert` and `--tls-key` (a client
    /// certificate) are optional but go together.
    pub fn load_client(&self) -> Result<Option<Tls>, SecurityError> {
        if !self.is_set() {
            return Ok(None);
        }
        let identity = self.identity()?;
        let Some(ca) = self.ca.as_deref() else {
            let given = if self.domain.is_some() {
                vec![self.names.domain.clone()]
            } else {
                vec![self.names.cert.clone(), self.names.key.clone()]
            };
            return Err(SecurityError::Missing {
                given,
                missing: "a CA (--tls-ca, DISTGAT_TLS_CA or a config file's tls_ca)",
                why: "the server's certificate is verified against that CA",
            });
        };
        if let Some(domain) = &self.domain {
            rustls_pki_types::ServerName::try_from(domain.as_str()).map_err(|e| {
                SecurityError::Domain {
                    flag: self.names.domain.clone(),
                    domain: domain.clone(),
                    detail: e.to_string(),
                }
            })?;
        }
        let tls = Tls {
            ca: Certificate::from_pem(pem_certs(&self.names.ca, ca)?),
            identity: identity.as_ref().map(|(i, _, _)| i.clone()),
            domain: self.domain.clone(),
        };
        if let Some((_, cert, key)) = identity {
            tonic::transport::Endpoint::from_static("https://localhost")
                .tls_config(tls.client_config())
                .map_err(|e| SecurityError::Identity {
                    cert_name: self.names.cert.clone(),
                    cert: cert.to_path_buf(),
                    key_name: self.names.key.clone(),
                    key: key.to_path_buf(),
                    detail: error_chain(&e),
                })?;
        }
        Ok(Some(tls))
    }
}

impl Tls {
    /// The server side: this side's identity; client certificates verified against the CA
    /// when presented (which RPCs require one is checked per service, see
    /// [`require_client_cert`]).
    pub fn server_config(&self) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new()
            .client_ca_root(self.ca.clone())
            .client_auth_optional(true);
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        config
    }

    /// The client side: trust the CA only; present this side's certificate when it has one.
    pub fn client_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(self.ca.clone());
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

/// A channel endpoint for `host:port` (or a full `http://`/`https://` URI) with distgat's
/// connection settings and, when `tls` is given, TLS (`host:port` then means `https://`).
/// An `http://` address with TLS, or an `https://` address without it, is an error.
pub fn secure_endpoint(
    address: &str,
    tls: Option<&Tls>,
) -> Result<tonic::transport::Endpoint, SecurityError> {
    let bad = |detail: String| SecurityError::Address {
        address: address.to_string(),
        detail,
    };
    let uri = match (address.split_once("://"), tls) {
        (Some(("http", _)), Some(_)) => {
            return Err(bad(
                "http:// is plaintext, but TLS flags are given: use https:// or host:port".into(),
            ))
        }
        (Some(("https", _)), None) => {
            return Err(bad(
                "https:// needs --tls-ca (the CA that signed the server's certificate)".into(),
            ))
        }
        (Some(_), _) => address.to_string(),
        (None, Some(_)) => format!("https://{address}"),
        (None, None) => format!("http://{address}"),
    };
    let endpoint = crate::endpoint(&uri).map_err(|e| bad(error_chain(&e)))?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.client_config())
            .map_err(|e| bad(error_chain(&e))),
        None => Ok(endpoint),
    }
}

/// Reads a bearer token from `path` (the `--auth-token-file` flag): the file's text,
/// trimmed. An unreadable or empty file, or one with characters a header cannot carry,
/// is an error naming the file.
pub fn read_token_file(path: &Path) -> Result<String, SecurityError> {
    let bad = |detail: String| SecurityError::Token {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(bad("the file is empty (it must hold the token)".into()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "the token must be printable ASCII without spaces (e.g. `openssl rand -hex 32`)".into(),
        ));
    }
    Ok(token.to_string())
}

/// Client side: adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// `token` must be printable ASCII (as [`read_token_file`] ensures).
    pub fn new(token: Option<&str>) -> Result<Self, SecurityError> {
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| SecurityError::Token {
                        path: PathBuf::from("(token)"),
                        detail: "the token must be printable ASCII without spaces".into(),
                    })
            })
            .transpose()
            .map(Bearer)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel that sends the bearer token on every call.
pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// Server side: refuses a call without `authorization: Bearer <token>` (or with another
/// token) with UNAUTHENTICATED. The comparison takes the same time wherever the tokens
/// differ. With no token configured every call passes.
#[derive(Clone, Default)]
pub struct TokenCheck(Option<std::sync::Arc<[u8]>>);

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_tuple("TokenCheck")
            .field(&self.0.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl TokenCheck {
    pub fn new(token: Option<&str>) -> Self {
        TokenCheck(token.map(|t| t.as_bytes().into()))
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.0 else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(token) if constant_time_eq::constant_time_eq(token.as_bytes(), expected) => {
                Ok(request)
            }
            Some(_) => Err(Status::unauthenticated(
                "wrong bearer token (check DISTGAT_TOKEN or --auth-token-file)",
            )),
            None => Err(Status::unauthenticated(
                "this coordinator needs a bearer token: set DISTGAT_TOKEN or give \
                 --auth-token-file",
            )),
        }
    }
}

/// Refuses a call that came without a client certificate (one that was presented has
/// been verified against the CA in the handshake). Passes every call on a plaintext
/// server (`tls_on` false).
// Its callers (interceptors and service handlers) must return a `Status` themselves.
/// (The interceptor form is [`ClientCertCheck`].)
#[allow(clippy::result_large_err)]
pub fn require_client_cert<T>(request: &Request<T>, tls_on: bool) -> Result<(), Status> {
    if !tls_on || request.peer_certs().is_some_and(|c| !c.is_empty()) {
        return Ok(());
    }
    Err(Status::unauthenticated(
        "this RPC is for the coordinator and workers: present a client certificate signed \
         by the cluster's --tls-ca (--tls-cert, --tls-key)",
    ))
}

/// [`require_client_cert`] as an interceptor, for whole services (the workers' Worker and
/// HaloExchange).
#[derive(Debug, Clone, Copy)]
pub struct ClientCertCheck {
    /// Whether the server speaks TLS; a plaintext server lets every call through.
    pub tls_on: bool,
}

impl tonic::service::Interceptor for ClientCertCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        require_client_cert(&request, self.tls_on)?;
        Ok(request)
    }
}

//! The optional TOML configuration file. Precedence, highest first: command-line flag,
//! `DISTGAT_*` environment variable, this file, built-in default. (clap folds the first
//! two together; [`pick`] adds the file and the default.)

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("config file {path}: {key}: {detail}")]
    Value {
        path: PathBuf,
        key: String,
        detail: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub coordinator: CoordinatorSection,
    #[serde(default)]
    pub worker: WorkerSection,
    #[serde(default)]
    pub client: ClientSection,
    /// Where it was read from (for error messages).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorSection {
    pub listen: Option<String>,
    pub data_root: Option<PathBuf>,
    pub work_dir: Option<PathBuf>,
    pub max_upload_bytes: Option<u64>,
    pub heartbeat_timeout_ms: Option<u64>,
    pub addr_file: Option<PathBuf>,
    pub keep_jobs: Option<usize>,
    pub metrics_listen: Option<String>,
    /// `stream` or `shared` (`--shard-source`).
    pub shard_source: Option<String>,
    /// `part` or `job` (`--recovery`).
    pub recovery: Option<String>,
    /// Client fetches at once (`--max-concurrent-fetches`).
    pub max_concurrent_fetches: Option<u32>,
    /// Shards streamed at once (`--max-concurrent-shard-streams`; 0: all).
    pub max_concurrent_shard_streams: Option<u32>,
    /// PEM certificate this process presents (`--tls-cert`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (`--tls-key`).
    pub tls_key: Option<PathBuf>,
    /// PEM CA that signed the other side's certificate (`--tls-ca`).
    pub tls_ca: Option<PathBuf>,
    /// File holding the bearer token (`--auth-token-file`).
    pub auth_token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    pub coordinator: Option<String>,
    pub listen: Option<String>,
    pub advertise_host: Option<String>,
    pub addr_file: Option<PathBuf>,
    pub metrics_listen: Option<String>,
    /// The worker's own directory (`--work-dir`).
    pub work_dir: Option<PathBuf>,
    /// The shard cache's size limit (`--shard-cache-max-bytes`).
    pub shard_cache_max_bytes: Option<u64>,
    /// The halo mailbox's byte cap (`--mailbox-max-bytes`).
    pub mailbox_max_bytes: Option<u64>,
    /// PEM certificate this process presents (`--tls-cert`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (`--tls-key`).
    pub tls_key: Option<PathBuf>,
    /// PEM CA that signed the other side's certificate (`--tls-ca`).
    pub tls_ca: Option<PathBuf>,
    /// File holding the bearer token (`--auth-token-file`).
    pub auth_token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    pub coordinator: Option<String>,
    /// The name in the coordinator's certificate (`--tls-domain`).
    pub tls_domain: Option<String>,
    /// PEM certificate this process presents (`--tls-cert`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (`--tls-key`).
    pub tls_key: Option<PathBuf>,
    /// PEM CA that signed the other side's certificate (`--tls-ca`).
    pub tls_ca: Option<PathBuf>,
    /// File holding the bearer token (`--auth-token-file`).
    pub auth_token_file: Option<PathBuf>,
}

/// Reads the file, or returns an empty configuration when there is none.
pub fn load_config(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.into(),
        detail: e.to_string(),
    })?;
    let mut config: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Read {
        path: path.into(),
        detail: e.to_string().trim_end().to_string(),
    })?;
    config.path = path.into();
    Ok(config)
}

impl FileConfig {
    /// Parses a value from the file, naming the key when it is malformed.
    pub fn parse<T: std::str::FromStr>(
        &self,
        key: &str,
        value: Option<&String>,
    ) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        value
            .map(|v| {
                v.parse().map_err(|e: T::Err| ConfigError::Value {
                    path: self.path.clone(),
                    key: key.into(),
                    detail: format!("'{v}': {e}"),
                })
            })
            .transpose()
    }
}

/// Flag-or-env, then file, then default.
pub fn pick<T>(flag_or_env: Option<T>, file: Option<T>, default: T) -> T {
    flag_or_env.or(file).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("distgat.toml");
        std::fs::write(
            &path,
            "[coordinator]\nlisten = \"0.0.0.0:7000\"\nmax_upload_bytes = 5\n",
        )
        .unwrap();
        let c = load_config(Some(&path)).unwrap();
        let from_file = c.coordinator.max_upload_bytes;
        assert_eq!(pick(None, from_file, 64), 5);
        assert_eq!(pick(Some(9), from_file, 64), 9);
        assert_eq!(pick(None, None, 64), 64);
        let listen: Option<std::net::SocketAddr> = c
            .parse("coordinator.listen", c.coordinator.listen.as_ref())
            .unwrap();
        assert_eq!(listen.unwrap().port(), 7000);

        std::fs::write(&path, "[coordinator]\nlisten_addr = \"x\"\n").unwrap();
        let e = load_config(Some(&path)).unwrap_err().to_string();
        assert!(
            e.contains("distgat.toml") && e.contains("listen_addr"),
            "{e}"
        );

        std::fs::write(&path, "[worker]\nlisten = \"nonsense\"\n").unwrap();
        let c = load_config(Some(&path)).unwrap();
        let e = c
            .parse::<std::net::SocketAddr>("worker.listen", c.worker.listen.as_ref())
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.listen") && e.contains("nonsense"), "{e}");
    }
}

//! The `distgat` binary with TLS and a bearer token: a coordinator and a worker started
//! with `--tls-*` and `--auth-token-file`, `submit --watch` and `fetch` with the CA and
//! `DISTGAT_TOKEN` (output = `distgat infer`'s bytes), `distgat run` with the same flags,
//! and the refusals a user sees (no token, plaintext, a flag without its partner), each a
//! clear error and a non-zero exit, never a panic. Certificates come from rcgen here.

mod common;
use common::Children;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOKEN: &str = "cli-test-token";

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_distgat")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `distgat args...` in the repository, with only the given DISTGAT_* variables.
fn distgat(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(exe());
    command.args(args).current_dir(repo());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DISTGAT_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("running distgat")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output, what: &str) -> String {
    assert!(o.status.success(), "{what} failed: {}", stderr(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A CA, and one certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM files.
fn pki(dir: &Path, name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let write = |file: &str, text: String| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

/// Starts `distgat args...` (from the repository root) and returns the address it prints.
fn start(children: &mut Children, args: &[&str]) -> String {
    let mut cmd = Command::new(exe());
    cmd.args(args).current_dir(repo());
    children.start(cmd, &format!("distgat {}", args.join(" ")))
}

fn infer_cora(out: &Path) -> Vec<u8> {
    let o = distgat(
        &[
            "infer",
            "--graph",
            "data/cora/edges.npy",
            "--features",
            "data/cora/features.npy",
            "--normalize-features",
            "row",
            "--model",
            "reference/cora-gat/model.json",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    ok(&o, "infer");
    std::fs::read(out).unwrap()
}

#[test]
fn cli_over_tls_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "node");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let token_file = token_file.display().to_string();
    let work = dir.path().join("work").display().to_string();
    let tls = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-ca",
        &ca,
        "--auth-token-file",
        &token_file,
    ];
    let mut children = Children::default();
    let mut args = vec![
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--work-dir",
        &work,
    ];
    args.extend(tls);
    let coordinator = start(&mut children, &args);
    let mut args = vec!["worker", "--coordinator", &coordinator];
    args.extend(tls);
    start(&mut children, &args);

    // Health needs TLS but no token, on the coordinator as on probes.
    let o = distgat(&["health", &coordinator, "--tls-ca", &ca], &[]);
    assert!(ok(&o, "health over TLS").contains("SERVING"));

    // The client: the CA by flag, the token from DISTGAT_TOKEN.
    let env = [
        ("DISTGAT_COORDINATOR", coordinator.as_str()),
        ("DISTGAT_TOKEN", TOKEN),
    ];
    let o = distgat(&["workers", "--wait", "1", "--tls-ca", &ca], &env);
    ok(&o, "workers");
    let o = distgat(
        &[
            "submit",
            "--graph",
            "data/cora/edges.npy",
            "--features",
            "data/cora/features.npy",
            "--model",
            "reference/cora-gat/model.json",
            "--normalize-features",
            "--tls-ca",
            &ca,
        ],
        &env,
    );
    let job = ok(&o, "submit").trim().to_string();
    ok(&distgat(&["watch", &job, "--tls-ca", &ca], &env), "watch");
    let fetched = dir.path().join("fetched.npy");
    ok(
        &distgat(
            &[
                "fetch",
                &job,
                "--out",
                fetched.to_str().unwrap(),
                "--tls-ca",
                &ca,
            ],
            &env,
        ),
        "fetch",
    );
    let reference = infer_cora(&dir.path().join("infer.npy"));
    assert!(
        std::fs::read(&fetched).unwrap() == reference,
        "fetched output differs from distgat infer"
    );

    // --auth-token-file wins over DISTGAT_TOKEN, and says so.
    let wrong = [
        ("DISTGAT_COORDINATOR", coordinator.as_str()),
        ("DISTGAT_TOKEN", "nope"),
    ];
    let o = distgat(
        &["graphs", "--tls-ca", &ca, "--auth-token-file", &token_file],
        &wrong,
    );
    ok(&o, "graphs with the file's token");
    assert!(
        stderr(&o).contains("DISTGAT_TOKEN is ignored"),
        "{}",
        stderr(&o)
    );

    // Refusals: a wrong token, no token, plaintext; each a clear error, exit 1.
    let no_token = [("DISTGAT_COORDINATOR", coordinator.as_str())];
    for (args, env, expect) in [
        (
            vec!["graphs", "--tls-ca", ca.as_str()],
            &wrong[..],
            "wrong bearer token",
        ),
        (
            vec!["graphs", "--tls-ca", ca.as_str()],
            &no_token[..],
            "DISTGAT_TOKEN",
        ),
        (vec!["graphs"], &env[..], "--tls-ca"),
    ] {
        let o = distgat(&args, env);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(
            e.contains(expect) && !e.contains("panicked"),
            "{args:?}: {e}"
        );
    }
    let o = distgat(&["graphs", "--tls-ca", &ca], &wrong);
    assert!(stderr(&o).contains("Unauthenticated"), "{}", stderr(&o));
}

#[test]
fn run_with_tls_and_a_token_matches_infer() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "node");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let out = dir.path().join("run.npy");
    let o = distgat(
        &[
            "run",
            "--workers",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &ca,
            "--auth-token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    );
    ok(&o, "run with TLS");
    assert!(
        std::fs::read(&out).unwrap() == infer_cora(&dir.path().join("infer.npy")),
        "distgat run over TLS differs from distgat infer"
    );
}

/// Every bad TLS flag or file is refused before anything starts, naming flag and file.
#[test]
fn bad_tls_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "node");
    let (_, _, other_key) = pki(dir.path(), "other");
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.display().to_string();
    let missing = dir.path().join("absent.pem").display().to_string();
    let work = dir.path().join("work").display().to_string();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--tls-key", &key, "--tls-ca", &ca],
            vec!["--tls-key", "--tls-cert"],
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &key],
            vec!["--tls-ca"],
        ),
        (
            vec!["--tls-cert", &missing, "--tls-key", &key, "--tls-ca", &ca],
            vec!["--tls-cert", "absent.pem"],
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &other_key,
                "--tls-ca",
                &ca,
            ],
            vec!["node-cert.pem", "other-key.pem"],
        ),
        (
            vec!["--auth-token-file", &empty],
            vec!["--auth-token-file", "empty-token", "empty"],
        ),
    ];
    for (flags, expect) in cases {
        let mut args = vec![
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
            &work,
        ];
        args.extend(&flags);
        let o = distgat(&args, &[]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {e}");
        assert!(
            expect.iter().all(|x| e.contains(x)) && !e.contains("panicked"),
            "{flags:?}: {e}"
        );
    }
    // The same checks on `run`, before any process starts.
    let o = distgat(&["run", "--tls-cert", &cert], &[]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("--tls-key"), "{e}");
    // A client: an unreadable CA names the flag and file.
    let o = distgat(
        &[
            "graphs",
            "--coordinator",
            "127.0.0.1:1",
            "--tls-ca",
            &missing,
        ],
        &[],
    );
    let e = stderr(&o);
    assert!(
        o.status.code() == Some(1) && e.contains("--tls-ca") && e.contains("absent.pem"),
        "{e}"
    );
    // A setting from an environment variable or the config file is named as the user gave
    // it, and its io error is said once.
    let coordinator = [
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--work-dir",
        &work,
    ];
    let o = distgat(
        &coordinator,
        &[
            ("DISTGAT_TLS_CERT", &missing),
            ("DISTGAT_TLS_KEY", &key),
            ("DISTGAT_TLS_CA", &ca),
        ],
    );
    let e = stderr(&o);
    assert!(
        o.status.code() == Some(1)
            && e.contains("DISTGAT_TLS_CERT")
            && e.contains("absent.pem")
            && !e.contains("--tls-cert")
            && e.matches("os error").count() == 1,
        "{e}"
    );
    let config = dir.path().join("distgat.toml");
    std::fs::write(
        &config,
        format!("[coordinator]\ntls_cert = '{cert}'\ntls_key = '{key}'\n"),
    )
    .unwrap();
    let config = config.display().to_string();
    let mut args = coordinator.to_vec();
    args.extend(["--config", &config]);
    let e = stderr(&distgat(&args, &[]));
    assert!(
        e.contains("distgat.toml: coordinator.tls_cert and ")
            && e.contains("coordinator.tls_key were given without a CA (--tls-ca"),
        "{e}"
    );
    let o = distgat(
        &["graphs", "--coordinator", "127.0.0.1:1"],
        &[("DISTGAT_TLS_DOMAIN", "node")],
    );
    let e = stderr(&o);
    assert!(
        o.status.code() == Some(1)
            && e.contains("DISTGAT_TLS_DOMAIN was given without a CA (--tls-ca"),
        "{e}"
    );
    // A name that is not a DNS name or an IP address is named as given, not as the address.
    let o = distgat(
        &["graphs", "--coordinator", "127.0.0.1:1", "--tls-ca", &ca],
        &[("DISTGAT_TLS_DOMAIN", "bad name!")],
    );
    let e = stderr(&o);
    assert!(
        o.status.code() == Some(1)
            && e.contains("DISTGAT_TLS_DOMAIN 'bad name!': not a DNS name or an IP address"),
        "{e}"
    );
}

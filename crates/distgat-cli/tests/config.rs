//! Where the servers and client subcommands take their settings from: flag > `DISTGAT_*`
//! environment variable > `--config` TOML file > default; and bad configuration fails
//! cleanly, naming the file and the key.

use std::process::{Command, Output};

fn distgat(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distgat"));
    command.args(args);
    // Start from a clean slate: no DISTGAT_* from the environment running the tests.
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

/// Nothing listens on these ports (1 and 2 are privileged and unused here), so the client
/// fails to connect and names the address it chose.
#[test]
fn client_address_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("distgat.toml");
    std::fs::write(&config, "[client]\ncoordinator = \"127.0.0.1:1\"\n").unwrap();
    let config = config.to_str().unwrap();

    let from_file = distgat(&["workers", "--config", config], &[]);
    assert!(!from_file.status.success());
    assert!(
        stderr(&from_file).contains("127.0.0.1:1"),
        "{}",
        stderr(&from_file)
    );

    let env_wins = distgat(
        &["workers"],
        &[
            ("DISTGAT_CONFIG", config),
            ("DISTGAT_COORDINATOR", "127.0.0.1:2"),
        ],
    );
    assert!(
        stderr(&env_wins).contains("127.0.0.1:2"),
        "{}",
        stderr(&env_wins)
    );

    let flag_wins = distgat(
        &["workers", "--coordinator", "127.0.0.1:3"],
        &[
            ("DISTGAT_CONFIG", config),
            ("DISTGAT_COORDINATOR", "127.0.0.1:2"),
        ],
    );
    assert!(
        stderr(&flag_wins).contains("127.0.0.1:3"),
        "{}",
        stderr(&flag_wins)
    );
}

/// `workers --wait` is what scripts run right after starting a coordinator: it keeps
/// trying to connect for the whole --timeout, not a fixed handful of attempts.
#[test]
fn workers_wait_keeps_trying_to_connect_for_the_timeout() {
    let started = std::time::Instant::now();
    let o = distgat(
        &[
            "workers",
            "--coordinator",
            "127.0.0.1:1",
            "--wait",
            "1",
            "--timeout",
            "3",
        ],
        &[],
    );
    let took = started.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("no coordinator answered at 127.0.0.1:1 within 3 s (--timeout)"),
        "{e}"
    );
    assert!(took >= 2.9, "gave up after {took:.1} s of a 3 s --timeout");
}

#[test]
fn health_names_the_whole_server_service() {
    let o = distgat(&["health", "127.0.0.1:1", "--timeout", "0"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("127.0.0.1:1 is not serving as a whole"), "{e}");
}

#[test]
fn bad_config_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");

    std::fs::write(&config, "[coordinator]\nlisten_on = \"0.0.0.0:1\"\n").unwrap();
    let o = distgat(&["coordinator", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("cluster.toml") && e.contains("listen_on"), "{e}");
    assert!(!e.contains("panicked"), "{e}");

    std::fs::write(&config, "[coordinator]\nlisten = \"not an address\"\n").unwrap();
    let o = distgat(&["coordinator", "--config", config.to_str().unwrap()], &[]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("coordinator.listen") && e.contains("not an address"),
        "{e}"
    );

    let o = distgat(&["worker", "--config", "/nonexistent/distgat.toml"], &[]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("/nonexistent/distgat.toml"),
        "{e}"
    );

    // A worker with no coordinator address anywhere says where to give one.
    let o = distgat(&["worker"], &[]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("DISTGAT_COORDINATOR"),
        "{e}"
    );

    // A malformed env var is refused by name, like a flag.
    let o = distgat(&["coordinator"], &[("DISTGAT_MAX_UPLOAD_BYTES", "lots")]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("max-upload-bytes"), "{e}");
}

/// The coordinator's data root must exist; the error names it.
#[test]
fn missing_data_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = distgat(
        &[
            "coordinator",
            "--data-root",
            "/nonexistent/data",
            "--work-dir",
            dir.path().join("work").to_str().unwrap(),
        ],
        &[],
    );
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("/nonexistent/data"),
        "{e}"
    );
}

/// `fetch --ids-out` naming the `--out` file would overwrite the rows with the ids: refused
/// before connecting.
#[test]
fn fetch_refuses_one_file_for_rows_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.npy");
    let out = out.to_str().unwrap();
    let o = distgat(
        &[
            "fetch",
            "job-1",
            "--out",
            out,
            "--ids-out",
            out,
            "--coordinator",
            "127.0.0.1:1",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("--ids-out") && e.contains("also named by --out"),
        "{e}"
    );
    assert!(!std::path::Path::new(out).exists());
}

/// A bad value from a `DISTGAT_*` variable names the variable (clap alone names only the
/// flag, which the user never typed); the same value typed as the flag names the flag only.
#[test]
fn bad_environment_value_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_str().unwrap();
    let o = distgat(
        &["coordinator", "--work-dir", work],
        &[("DISTGAT_KEEP_JOBS", "x")],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("invalid value 'x'"), "{err}");
    assert!(
        err.contains("environment variable DISTGAT_KEEP_JOBS"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let o = distgat(
        &["coordinator", "--work-dir", work, "--keep-jobs", "x"],
        &[],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("--keep-jobs"), "{err}");
    assert!(!err.contains("environment variable"), "{err}");
}

/// The TLS, token and shard-source settings are also config-file keys, each checked and
/// named like its flag.
#[test]
fn security_and_shard_source_keys_in_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    let work = dir.path().join("work");
    let run = |section: &str, body: &str, role: &[&str]| {
        std::fs::write(&config, format!("[{section}]\n{body}\n")).unwrap();
        let mut args = role.to_vec();
        args.extend(["--config", config.to_str().unwrap()]);
        let o = distgat(&args, &[]);
        assert!(!o.status.success(), "{section}: {body}: succeeded");
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{e}");
        e
    };
    let w = work.to_str().unwrap();
    let coordinator = ["coordinator", "--work-dir", w, "--listen", "127.0.0.1:0"];

    let e = run("coordinator", "max_concurrent_fetches = 0", &coordinator);
    assert!(
        e.contains("coordinator.max_concurrent_fetches") && e.contains("at least 1"),
        "{e}"
    );
    let o = distgat(&["coordinator", "--max-concurrent-fetches", "0"], &[]);
    assert!(!o.status.success() && stderr(&o).contains("--max-concurrent-fetches"));

    let e = run("coordinator", "shard_source = \"nfs\"", &coordinator);
    assert!(
        e.contains("coordinator.shard_source") && e.contains("nfs"),
        "{e}"
    );
    let e = run("coordinator", "recovery = \"retry\"", &coordinator);
    assert!(
        e.contains("coordinator.recovery") && e.contains("not one of: part, job"),
        "{e}"
    );
    let o = distgat(&["coordinator", "--recovery", "retry"], &[]);
    assert!(!o.status.success() && stderr(&o).contains("--recovery"));
    let o = distgat(&["run", "--recovery", "retry"], &[]);
    assert!(!o.status.success() && stderr(&o).contains("--recovery"));

    let e = run(
        "coordinator",
        "tls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\ntls_ca = \"/nonexistent/ca.pem\"",
        &coordinator,
    );
    assert!(e.contains("/nonexistent/"), "{e}");

    let e = run(
        "coordinator",
        "auth_token_file = \"/nonexistent/token\"",
        &coordinator,
    );
    assert!(e.contains("/nonexistent/token"), "{e}");

    let e = run(
        "worker",
        "coordinator = \"127.0.0.1:1\"\ntls_cert = \"/nonexistent/w.pem\"\ntls_key = \"/nonexistent/wk.pem\"\ntls_ca = \"/nonexistent/ca.pem\"",
        &["worker"],
    );
    assert!(e.contains("/nonexistent/"), "{e}");

    let e = run(
        "client",
        "coordinator = \"127.0.0.1:1\"\nauth_token_file = \"/nonexistent/ctoken\"",
        &["workers"],
    );
    assert!(e.contains("/nonexistent/ctoken"), "{e}");

    let e = run("worker", "work_directory = \"x\"", &["worker"]);
    assert!(e.contains("work_directory"), "{e}");
}

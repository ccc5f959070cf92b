//! A flag that the rest of the command line leaves unused is an error naming it, never
//! silently dropped: each test gives one such combination, and checks the non-zero exit,
//! the message (the flag the user typed and why), no panic, and no output written. The
//! valid neighbours of each combination run (so the refusal is about the flag, not the
//! inputs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_distgat")
}

fn reference(case: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../reference")
        .join(case)
        .join(file)
}

/// Runs `distgat args` and returns (success, stderr).
fn distgat(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(exe()).args(args).output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `distgat args` fails with every one of `words` in its stderr, and no panic.
fn refused(args: &[&std::ffi::OsStr], words: &[&str]) {
    let (ok, stderr) = distgat(args);
    assert!(!ok, "accepted {args:?}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for w in words {
        assert!(stderr.contains(w), "{args:?}: no {w:?} in:\n{stderr}");
    }
}

fn os<'a>(v: &'a [&'a str]) -> Vec<&'a std::ffi::OsStr> {
    v.iter().map(std::ffi::OsStr::new).collect()
}

struct Gatv2 {
    dir: tempfile::TempDir,
    graph: String,
    features: String,
    model: String,
}

fn gatv2() -> Gatv2 {
    let s = |f: &str| reference("gatv2-n200", f).display().to_string();
    Gatv2 {
        dir: tempfile::tempdir().unwrap(),
        graph: s("edge_index.npy"),
        features: s("x.npy"),
        model: s("model.json"),
    }
}

impl Gatv2 {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `distgat run` on the case with `extra` flags, writing `out`.
    fn run_args<'a>(&'a self, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "run",
            "--graph",
            &self.graph,
            "--features",
            &self.features,
            "--model",
            &self.model,
            "--workers",
            "2",
            "--out",
            out,
        ];
        v.extend_from_slice(extra);
        v
    }
}

#[test]
fn run_refuses_edge_features_for_a_model_without_edge_dim() {
    let c = gatv2();
    let ea = c.path("ea.npy");
    // 1174 edges, 3 columns: well-formed, only unused.
    common::write_npy(Path::new(&ea), &[1174, 3], &vec![0f32; 1174 * 3]);
    let out = c.path("out.npy");
    refused(
        &os(&c.run_args(&out, &["--edge-features", &ea])),
        &[
            "--edge-features",
            "ea.npy",
            "no layer of the model has edge_dim",
        ],
    );
    assert!(!Path::new(&out).exists());
    // `infer` refuses it the same way.
    refused(
        &os(&[
            "infer",
            "--graph",
            &c.graph,
            "--features",
            &c.features,
            "--model",
            &c.model,
            "--out",
            &out,
            "--edge-features",
            &ea,
        ]),
        &["--edge-features", "no layer of the model has edge_dim"],
    );
}

#[test]
fn run_refuses_a_method_with_a_reused_partition_and_recovery_it_cannot_keep() {
    let c = gatv2();
    let part = c.path("part");
    let (ok, stderr) = distgat(&os(&[
        "partition",
        "--graph",
        &c.graph,
        "--features",
        &c.features,
        "--parts",
        "2",
        "--out",
        &part,
    ]));
    assert!(ok, "{stderr}");
    let out = c.path("out.npy");
    refused(
        &os(&c.run_args(&out, &["--partition", &part, "--method", "random"])),
        &["--partition", "--method", "cannot be used with"],
    );
    // Attention output: a lost part cannot restart alone.
    let att = c.path("att");
    refused(
        &os(&c.run_args(&out, &["--recovery", "part", "--attention-dir", &att])),
        &[
            "--recovery part",
            "--attention-dir",
            "restarts the whole job",
        ],
    );
    assert!(!Path::new(&out).exists());
    // One worker and no spare: nothing to restart on.
    let one = c.run_args(&out, &["--recovery", "job"]);
    let one: Vec<&str> = one
        .iter()
        .map(|&a| if a == "2" { "1" } else { a })
        .collect();
    refused(&os(&one), &["--recovery job", "one worker", "--spares"]);
    // The same job with --recovery job runs.
    let (ok, stderr) = distgat(&os(&c.run_args(
        &out,
        &[
            "--recovery",
            "job",
            "--attention-dir",
            &att,
            "--partition",
            &part,
        ],
    )));
    assert!(ok, "{stderr}");
}

#[test]
fn run_refuses_recovery_for_a_neighbourhood_built_in_place() {
    let s = |f: &str| reference("knn-gatv2-n400", f).display().to_string();
    let (points, features, model) = (s("points.npy"), s("x.npy"), s("model.json"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.npy").display().to_string();
    let args = |extra: &[&'static str]| {
        let mut v: Vec<String> = [
            "run",
            "--points",
            &points,
            "--knn",
            "8",
            "--features",
            &features,
            "--model",
            &model,
            "--workers",
            "2",
            "--out",
            &out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    for mode in ["part", "job"] {
        let v = args(&["--recovery", mode]);
        let refs: Vec<&std::ffi::OsStr> = v.iter().map(std::ffi::OsStr::new).collect();
        refused(
            &refs,
            &[&format!("--recovery {mode}"), "built in place", "--spares"],
        );
        assert!(!Path::new(&out).exists());
    }
}

#[test]
fn partition_refuses_options_its_method_does_not_take() {
    let c = gatv2();
    let base = |out: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "partition",
            "--graph",
            &c.graph,
            "--parts",
            "2",
            "--out",
            out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let out = c.path("p");
    let file = c.path("parts.npy");
    let file_method = format!("file:{file}");
    for (extra, flag, method) in [
        (&["--method", "range", "--seed", "7"][..], "--seed", "range"),
        (
            &["--method", "stream", "--trials", "4"][..],
            "--trials",
            "stream",
        ),
        (
            &["--method", "random", "--objective", "volume"][..],
            "--objective",
            "random",
        ),
        (
            &["--method", "random", "--imbalance", "1.2"][..],
            "--imbalance",
            "random",
        ),
        (
            &["--method", "stream", "--recursive"][..],
            "--recursive",
            "stream",
        ),
        (
            &["--method", "range", "--balance-edges"][..],
            "--balance-edges",
            "range",
        ),
        (
            &["--method", &file_method, "--seed", "1"][..],
            "--seed",
            "file",
        ),
    ] {
        let v = base(&out, extra);
        let refs: Vec<&std::ffi::OsStr> = v.iter().map(std::ffi::OsStr::new).collect();
        refused(&refs, &[flag, &format!("--method {method}")]);
        assert!(!Path::new(&out).exists(), "{extra:?} wrote a partition");
    }
    // What each method does take is accepted.
    for extra in [
        &["--method", "stream", "--imbalance", "1.1"][..],
        &["--method", "random", "--seed", "3"][..],
        &["--seed", "3", "--trials", "2", "--objective", "volume"][..],
    ] {
        let v = base(&out, extra);
        let refs: Vec<&std::ffi::OsStr> = v.iter().map(std::ffi::OsStr::new).collect();
        let (ok, stderr) = distgat(&refs);
        assert!(ok, "{extra:?}: {stderr}");
        std::fs::remove_dir_all(&out).unwrap();
    }
    // One part runs no partitioner: every method's options are unused (a parts file is
    // still read and checked).
    let one = |extra: &[&str]| -> Vec<String> {
        let mut v = base(&out, extra);
        let k = v.iter().position(|a| a == "--parts").unwrap();
        v[k + 1] = "1".into();
        v
    };
    for (extra, flag) in [
        (&["--seed", "7"][..], "--seed"),
        (&["--trials", "4"][..], "--trials"),
        (&["--method", "random", "--seed", "2"][..], "--seed"),
        (
            &["--method", "stream", "--imbalance", "1.1"][..],
            "--imbalance",
        ),
    ] {
        let v = one(extra);
        let refs: Vec<&std::ffi::OsStr> = v.iter().map(std::ffi::OsStr::new).collect();
        refused(&refs, &[flag, "--parts 1"]);
        assert!(!Path::new(&out).exists(), "{extra:?} wrote a partition");
    }
    let v = one(&["--method", "random"]);
    let refs: Vec<&std::ffi::OsStr> = v.iter().map(std::ffi::OsStr::new).collect();
    let (ok, stderr) = distgat(&refs);
    assert!(ok, "--parts 1 --method random: {stderr}");
    std::fs::remove_dir_all(&out).unwrap();
    // Recursive bisection has no volume objective (METIS itself would only say "invalid
    // input").
    let v = base(&out, &["--recursive", "--objective", "volume"]);
    let refs: Vec<&std::ffi::OsStr> = v.iter().map(std::ffi::OsStr::new).collect();
    refused(&refs, &["--objective volume", "--recursive"]);
    // --assignment-dtype describes --assignment-out.
    let v = base(&out, &["--assignment-dtype", "int32"]);
    let refs: Vec<&std::ffi::OsStr> = v.iter().map(std::ffi::OsStr::new).collect();
    refused(&refs, &["--assignment-out"]);
}

#[test]
fn infer_and_submit_refuse_a_format_with_no_graph_file() {
    let s = |f: &str| reference("knn-gatv2-n400", f).display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.npy").display().to_string();
    refused(
        &os(&[
            "infer",
            "--points",
            &s("points.npy"),
            "--knn",
            "8",
            "--features",
            &s("x.npy"),
            "--model",
            &s("model.json"),
            "--out",
            &out,
            "--format",
            "mtx",
        ]),
        &["--format", "--graph"],
    );
    assert!(!Path::new(&out).exists());
    // A registered graph has its format already; --name and --upload describe a new one.
    for extra in [
        &["--format", "mtx"][..],
        &["--name", "mine"][..],
        &["--upload"][..],
        &["--edge-features", "ea.npy"][..],
        &["--max-neighbours", "3"][..],
    ] {
        let mut v = vec!["submit", "--graph-id", "graph-1", "--model", "m.json"];
        v.extend_from_slice(extra);
        refused(&os(&v), &["--graph-id", extra[0], "cannot be used with"]);
    }
    // A graph this submit registers has no partition yet.
    refused(
        &os(&[
            "submit",
            "--graph",
            "g.npy",
            "--features",
            "x.npy",
            "--partition-id",
            "partition-1",
            "--model",
            "m.json",
        ]),
        &["--partition-id", "--graph", "cannot be used with"],
    );
}

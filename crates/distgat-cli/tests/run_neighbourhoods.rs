//! `distgat run --points ... --knn K | --radius R`: the neighbourhood built distributed
//! over 1-4 workers, then the job over it, on the parts where they were built (or, with
//! `--method` or `--attention-dir`, on a partition). The built edges must be byte-identical to
//! `distgat neighbours` (and to the reference case's expected edges), and the output to
//! `distgat infer --points ...` (and within tolerance of PyG's float64 output).

mod common;
use common::{body, reference, s};

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use distgat_graph::Features;
use npyz::WriterBuilder;

fn distgat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distgat"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running distgat")
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `distgat run` over `rule` from `points` on each worker count, and checks the
/// edges against `distgat neighbours` and the output against `distgat infer`, both
/// single-process. Returns the single-process output and edges paths' directory.
fn compare(points: &Path, x: &Path, model: &Path, rule: &[&str], workers: &[usize]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (want_out, want_edges) = (dir.path().join("want.npy"), dir.path().join("want_e.npy"));
    let mut args = vec!["neighbours", "--points", s(points), "--out", s(&want_edges)];
    args.extend_from_slice(rule);
    ok(&distgat(&args), "distgat neighbours");
    let mut args = vec!["infer", "--points", s(points)];
    args.extend_from_slice(rule);
    args.extend_from_slice(&["--features", s(x), "--model", s(model), "--out"]);
    args.push(s(&want_out));
    ok(&distgat(&args), "distgat infer");
    for &w in workers {
        let (out, edges, summary) = (
            dir.path().join(format!("out{w}.npy")),
            dir.path().join(format!("edges{w}.npy")),
            dir.path().join(format!("summary{w}.json")),
        );
        let workers = w.to_string();
        let mut args = vec!["run", "--points", s(points)];
        args.extend_from_slice(rule);
        args.extend_from_slice(&["--features", s(x), "--model", s(model)]);
        args.extend_from_slice(&["--workers", &workers, "--out", s(&out)]);
        // On 2 workers no edges file is asked for: the edges then exist only on the
        // workers that built them.
        if w != 2 {
            args.extend_from_slice(&["--neighbours-out", s(&edges)]);
        } else {
            // One kernel thread each: the same bits, and the summary says so.
            args.extend_from_slice(&["--threads-per-worker", "1"]);
        }
        args.extend_from_slice(&["--summary-json", s(&summary)]);
        ok(&distgat(&args), &format!("distgat run --workers {w}"));
        if w != 2 {
            assert_eq!(
                fs::read(&edges).unwrap(),
                fs::read(&want_edges).unwrap(),
                "{rule:?}: edges on {w} workers"
            );
        } else {
            assert!(!edges.exists());
        }
        assert_eq!(
            fs::read(&out).unwrap(),
            fs::read(&want_out).unwrap(),
            "{rule:?}: output on {w} workers"
        );
        let summary: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&summary).unwrap()).unwrap();
        let parts = summary["neighbourhood"]["parts"].as_array().unwrap();
        assert_eq!(parts.len(), w);
        // The job ran on the parts where they were built: no partition, no shard.
        assert_eq!(summary["neighbourhood"]["kept"], true, "{summary}");
        let cores = std::thread::available_parallelism().unwrap().get() as u64;
        for worker in summary["workers"].as_array().unwrap() {
            assert_eq!(worker["shard_cache"], "kept", "{worker}");
            let threads = if w == 2 { 1 } else { cores };
            assert_eq!(worker["threads"].as_u64(), Some(threads), "{worker}");
        }
        for p in parts {
            let (fetched, needed) = (p["bytes_fetched"].as_u64(), p["bytes_needed"].as_u64());
            assert!(needed <= fetched, "{p}");
            if w == 1 {
                assert_eq!(fetched, Some(0));
            }
        }
    }
    fs::read(&want_edges).unwrap()
}

fn check_pyg(case: &str, out: &Path) {
    let got = Features::read_npy(out).unwrap();
    let want = Features::read_npy(&reference(case, "expected/out_f64.npy")).unwrap();
    assert_eq!((got.num_nodes, got.width), (want.num_nodes, want.width));
    let worst = got
        .values
        .iter()
        .zip(&want.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4, "{case}: max abs diff {worst} vs PyG float64");
}

#[test]
fn knn_reference_case_on_1_to_4_workers() {
    let case = "knn-gatv2-n400";
    let (points, x, model) = (
        reference(case, "points.npy"),
        reference(case, "x.npy"),
        reference(case, "model.json"),
    );
    let edges = compare(&points, &x, &model, &["--knn", "8"], &[1, 2, 3, 4]);
    // The reference's own edges, not only our single-process ones.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.npy");
    fs::write(&path, &edges).unwrap();
    assert_eq!(body(&path), body(&reference(case, "expected/edges.npy")));
    // And PyG's output, from a distributed run partitioned by METIS instead of on the
    // build's spatial parts (the default): the same bits as infer.
    let (out, infer_out) = (dir.path().join("out.npy"), dir.path().join("infer.npy"));
    let common = ["--knn", "8", "--features", s(&x), "--model", s(&model)];
    let mut args = vec![
        "run",
        "--points",
        s(&points),
        "--workers",
        "2",
        "--method",
        "metis",
    ];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--out", s(&out)]);
    ok(&distgat(&args), "run --method metis");
    check_pyg(case, &out);
    let mut args = vec!["infer", "--points", s(&points), "--out", s(&infer_out)];
    args.extend_from_slice(&common);
    ok(&distgat(&args), "infer");
    assert_eq!(fs::read(&out).unwrap(), fs::read(&infer_out).unwrap());
}

#[test]
fn radius_reference_case_on_2_workers() {
    let case = "radius-gat-n400";
    let (points, x, model) = (
        reference(case, "points.npy"),
        reference(case, "x.npy"),
        reference(case, "model.json"),
    );
    let rule = ["--radius", "0.203125", "--max-neighbours", "64"];
    let edges = compare(&points, &x, &model, &rule, &[2, 3]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.npy");
    fs::write(&path, &edges).unwrap();
    assert_eq!(body(&path), body(&reference(case, "expected/edges.npy")));

    // With --loop, row-normalised features and attention files: every file the same
    // bytes as infer's.
    let (a_infer, a_run) = (dir.path().join("a_infer"), dir.path().join("a_run"));
    let (o_infer, o_run) = (dir.path().join("o_infer.npy"), dir.path().join("o_run.npy"));
    let mut common = vec!["--points", s(&points), "--loop", "--normalize-features"];
    common.extend_from_slice(&rule);
    common.extend_from_slice(&["--features", s(&x), "--model", s(&model)]);
    let mut args = vec![
        "infer",
        "--out",
        s(&o_infer),
        "--attention-dir",
        s(&a_infer),
    ];
    args.extend_from_slice(&common);
    ok(&distgat(&args), "infer --loop");
    let mut args = vec!["run", "--out", s(&o_run), "--attention-dir", s(&a_run)];
    args.extend_from_slice(&["--workers", "3"]);
    args.extend_from_slice(&common);
    ok(&distgat(&args), "run --loop");
    assert_eq!(fs::read(&o_run).unwrap(), fs::read(&o_infer).unwrap());
    let mut files = 0;
    for entry in fs::read_dir(&a_infer).unwrap() {
        let name = entry.unwrap().file_name();
        assert_eq!(
            fs::read(a_run.join(&name)).unwrap(),
            fs::read(a_infer.join(&name)).unwrap(),
            "{name:?}"
        );
        files += 1;
    }
    assert_eq!(files, 4);
}

fn write_f32(path: &Path, rows: usize, cols: usize, values: &[f32]) {
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[rows as u64, cols as u64])
        .writer(std::fs::File::create(path).unwrap())
        .begin_nd()
        .unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
}

/// Points on a small integer grid (many exact ties at the K-th distance, duplicates
/// included) and K larger than a part: every part must fetch from its peers, and ties go
/// to the lower id across parts.
#[test]
fn grid_ties_and_parts_smaller_than_k() {
    let dir = tempfile::tempdir().unwrap();
    let n = 36;
    // A 4 x 4 grid, each point twice or thrice (exact duplicates), in a scrambled order.
    let coords: Vec<f32> = (0..n)
        .flat_map(|i| {
            let g = (i * 7) % 16;
            [(g % 4) as f32, (g / 4) as f32]
        })
        .collect();
    let points = dir.path().join("grid.npy");
    write_f32(&points, n, 2, &coords);
    // Features: the first n rows of the knn case's features (its model's width).
    let x_all = Features::read_npy(&reference("knn-gatv2-n400", "x.npy")).unwrap();
    let x = dir.path().join("x.npy");
    write_f32(&x, n, x_all.width, &x_all.values[..n * x_all.width]);
    let model = reference("knn-gatv2-n400", "model.json");
    // K = 13: 3 parts of 12 points hold only 11 others each.
    compare(&points, &x, &model, &["--knn", "13"], &[3]);
    compare(&points, &x, &model, &["--knn", "5", "--loop"], &[2]);
    compare(
        &points,
        &x,
        &model,
        &["--radius", "1.5", "--max-neighbours", "6"],
        &[3],
    );
    // Cosine, off the origin: grid points on the same ray are at cosine distance ~0 from
    // each other (ties broken by id across parts).
    let shifted: Vec<f32> = coords.iter().map(|&v| v + 1.0).collect();
    let points = dir.path().join("grid1.npy");
    write_f32(&points, n, 2, &shifted);
    compare(
        &points,
        &x,
        &model,
        &["--knn", "7", "--metric", "cosine"],
        &[2, 3],
    );
    compare(
        &points,
        &x,
        &model,
        &["--radius", "0.01", "--metric", "cosine", "--loop"],
        &[3],
    );
}

/// Each refusal names the flag, exits non-zero before starting anything, and leaves no
/// output behind.
#[test]
fn bad_input_is_refused_by_flag() {
    let case = "knn-gatv2-n400";
    let dir = tempfile::tempdir().unwrap();
    let (points, x, model) = (
        reference(case, "points.npy"),
        reference(case, "x.npy"),
        reference(case, "model.json"),
    );
    let graph = reference(case, "expected/edges.npy");
    let short = dir.path().join("short.npy");
    let p = Features::read_npy(&points).unwrap();
    write_f32(&short, 10, p.width, &p.values[..10 * p.width]);
    let out = dir.path().join("out.npy");
    // A point at the origin has no cosine distance.
    let zero = dir.path().join("zero.npy");
    let mut zeroed = p.values.clone();
    zeroed[5 * p.width..6 * p.width].fill(0.0);
    write_f32(&zero, p.num_nodes, p.width, &zeroed);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--points", s(&points), "--knn", "8", "--graph", s(&graph)],
            "--graph",
        ),
        (vec!["--points", s(&points), "--knn", "400"], "--knn"),
        (vec!["--points", s(&points), "--knn", "0"], "--knn"),
        (vec!["--points", s(&points), "--radius", "-1"], "--radius"),
        (
            vec!["--points", s(&zero), "--knn", "3", "--metric", "cosine"],
            "zero.npy",
        ),
        (vec!["--graph", s(&graph), "--hops", "2"], "--hops"),
        (vec!["--points", s(&short), "--knn", "3"], "--points"),
        (vec!["--knn", "3"], "--points"),
        (
            vec![
                "--points",
                s(&points),
                "--knn",
                "3",
                "--max-neighbours",
                "2",
            ],
            "--max-neighbours",
        ),
    ];
    for (rule, flag) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(&rule);
        args.extend_from_slice(&["--features", s(&x), "--model", s(&model), "--out", s(&out)]);
        args.extend_from_slice(&["--workers", "2"]);
        let run = distgat(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{rule:?} was accepted");
        assert!(stderr.contains(flag), "{rule:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{rule:?}: {stderr}");
        assert!(!out.exists(), "{rule:?} left {}", out.display());
    }
    // More workers than points is the user's --workers, named before anything starts.
    let run = distgat(&[
        "run",
        "--points",
        s(&short),
        "--knn",
        "3",
        "--features",
        s(&x),
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--workers",
        "11",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("--workers 11: more workers than the 10 points"),
        "{stderr}"
    );
    // A NaN coordinate is found by the coordinator, which names the file and row.
    let nan = dir.path().join("nan.npy");
    let mut values = p.values.clone();
    values[5 * p.width + 1] = f32::NAN;
    write_f32(&nan, p.num_nodes, p.width, &values);
    let run = distgat(&[
        "run",
        "--points",
        s(&nan),
        "--knn",
        "8",
        "--features",
        s(&x),
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--workers",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("nan.npy") && stderr.contains("row 5"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// Inputs the job would refuse are refused before the build (naming the flag), and a run
/// that fails after the build leaves no output behind: neither --out nor --neighbours-out
/// (an existing --neighbours-out file keeps its bytes).
#[test]
fn late_failures_leave_no_output_and_early_checks_name_the_flag() {
    let case = "knn-gatv2-n400";
    let dir = tempfile::tempdir().unwrap();
    let (points, x, model) = (
        reference(case, "points.npy"),
        reference(case, "x.npy"),
        reference(case, "model.json"),
    );
    let f = Features::read_npy(&x).unwrap();
    let (out, edges, summary) = (
        dir.path().join("out.npy"),
        dir.path().join("edges.npy"),
        dir.path().join("s.json"),
    );
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--points",
            s(&points),
            "--knn",
            "8",
            "--workers",
            "2",
        ];
        args.extend_from_slice(extra);
        distgat(&args)
    };
    let refused = |o: &Output, needles: &[&str]| {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "accepted: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{n}: {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists(), "left {}", out.display());
    };
    // Features of the wrong width: before any process starts.
    let narrow = dir.path().join("narrow.npy");
    let values: Vec<f32> = (0..f.num_nodes * 8).map(|i| i as f32).collect();
    write_f32(&narrow, f.num_nodes, 8, &values);
    let common = ["--model", s(&model), "--out", s(&out)];
    let mut args = vec!["--features", s(&narrow)];
    args.extend_from_slice(&common);
    refused(&run(&args), &["--features", "narrow.npy", "16"]);
    // No kernel thread at all is no setting.
    let mut args = vec!["--features", s(&x), "--threads-per-worker", "0"];
    args.extend_from_slice(&common);
    refused(&run(&args), &["--threads-per-worker"]);
    // A model with edge_dim: a built neighbourhood has no edge attributes.
    let edge_model = reference("gat-residual-edge-n120", "model.json");
    let args = [
        "--features",
        s(&x),
        "--model",
        s(&edge_model),
        "--out",
        s(&out),
    ];
    refused(&run(&args), &["--model", "edge_dim"]);
    // --out in a directory that does not exist, and --summary-json naming --out.
    let nowhere = dir.path().join("no/such/dir/out.npy");
    let args = [
        "--features",
        s(&x),
        "--model",
        s(&model),
        "--out",
        s(&nowhere),
    ];
    refused(&run(&args), &["--out", "does not exist"]);
    let mut args = vec!["--features", s(&x), "--summary-json", s(&out)];
    args.extend_from_slice(&common);
    refused(&run(&args), &["--summary-json", "--out"]);
    // NaN in a feature row fails in the job, after the build: no --out, and the existing
    // --neighbours-out is untouched.
    let nan = dir.path().join("nan.npy");
    let mut values = f.values.clone();
    values[7 * f.width] = f32::NAN;
    write_f32(&nan, f.num_nodes, f.width, &values);
    fs::write(&edges, b"old bytes").unwrap();
    let mut args = vec!["--features", s(&nan), "--neighbours-out", s(&edges)];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--summary-json", s(&summary)]);
    refused(&run(&args), &["nan.npy"]);
    assert_eq!(fs::read(&edges).unwrap(), b"old bytes");
    assert!(!summary.exists());
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// SIGTERM (a supervisor, `kill`) or SIGINT (Ctrl-C) to `distgat run` stops its
/// coordinator and workers and removes its temporary directory; the exit code says which
/// signal (128 + its number).
#[test]
fn a_signal_stops_every_process_of_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    // Enough work to be stopped midway: brute-force kNN over 64-D points.
    let (n, d) = (30_000, 64);
    let mut state = 12345u64;
    let values: Vec<f32> = (0..n * d)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    let points = dir.path().join("p.npy");
    write_f32(&points, n, d, &values);
    let x = dir.path().join("x.npy");
    write_f32(&x, n, 16, &values[..n * 16]);
    let model = reference("knn-gatv2-n400", "model.json");
    let (out, edges) = (dir.path().join("out.npy"), dir.path().join("edges.npy"));
    for (signal, code) in [("-TERM", 143), ("-INT", 130)] {
        let child = Command::new(env!("CARGO_BIN_EXE_distgat"))
            .args([
                "run",
                "--points",
                s(&points),
                "--knn",
                "16",
                "--workers",
                "2",
            ])
            .args(["--features", s(&x), "--model", s(&model), "--out", s(&out)])
            .args(["--neighbours-out", s(&edges)])
            .env("TMPDIR", &tmp)
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let killed = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let result = child.wait_with_output().unwrap();
        assert_eq!(result.status.code(), Some(code), "{signal}: {result:?}");
        assert!(!out.exists() && !edges.exists());
        // Nothing of the run is left: no process started with its temporary directory,
        // and the directory itself is gone.
        let left = Command::new("pgrep")
            .args(["-f", s(&tmp)])
            .output()
            .unwrap();
        assert!(left.stdout.is_empty(), "{signal}: processes left: {left:?}");
        let entries: Vec<_> = fs::read_dir(&tmp).unwrap().collect();
        assert!(entries.is_empty(), "{signal}: {entries:?}");
        // Nor any partial output beside --out or --neighbours-out, nor a part's rows.
        let partial: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial") || n.ends_with(".rows"))
            .collect();
        assert!(partial.is_empty(), "{signal}: {partial:?}");
    }
}

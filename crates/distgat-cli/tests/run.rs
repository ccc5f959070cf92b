//! Multi-process tests of the distributed runtime: real `distgat` binaries on ephemeral
//! loopback ports, every child killed on drop. The distributed output must be bitwise
//! identical to `distgat infer`'s.

mod common;
use common::run_job;

use std::io::{BufRead, BufReader};

use common::{write_npy, write_random_gat_model};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_distgat")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Inputs of one job.
struct Inputs {
    graph: PathBuf,
    features: PathBuf,
    model: PathBuf,
    normalize: bool,
    edge_features: Option<PathBuf>,
}

fn reference(case: &str) -> Inputs {
    if case == "cora-gat" {
        return Inputs {
            graph: repo().join("data/cora/edges.npy"),
            features: repo().join("data/cora/features.npy"),
            model: repo().join("reference/cora-gat/model.json"),
            normalize: true,
            edge_features: None,
        };
    }
    let dir = repo().join("reference").join(case);
    let edge_attr = dir.join("edge_attr.npy");
    Inputs {
        graph: dir.join("edge_index.npy"),
        features: dir.join("x.npy"),
        model: dir.join("model.json"),
        normalize: false,
        edge_features: edge_attr.exists().then_some(edge_attr),
    }
}

fn common_args(cmd: &mut Command, inputs: &Inputs, out: &Path, attention: &Path) {
    cmd.arg("--graph")
        .arg(&inputs.graph)
        .arg("--features")
        .arg(&inputs.features)
        .arg("--model")
        .arg(&inputs.model)
        .arg("--out")
        .arg(out)
        .arg("--attention-dir")
        .arg(attention);
    if inputs.normalize {
        cmd.args(["--normalize-features", "row"]);
    }
    if let Some(e) = &inputs.edge_features {
        cmd.arg("--edge-features").arg(e);
    }
}

fn check(output: std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The bytes of out.npy and of every attention file of a `distgat infer` run.
fn infer(inputs: &Inputs, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let (out, att) = (dir.join("infer.npy"), dir.join("infer-att"));
    let mut cmd = Command::new(exe());
    cmd.arg("infer");
    common_args(&mut cmd, inputs, &out, &att);
    check(cmd.output().unwrap(), "distgat infer");
    files(&out, &att)
}

fn files(out: &Path, att: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![("out.npy".to_string(), std::fs::read(out).unwrap())];
    let mut names: Vec<_> = std::fs::read_dir(att)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        v.push((n.clone(), std::fs::read(att.join(&n)).unwrap()));
    }
    v
}

/// Runs `distgat run` and returns its files and summary.
fn run(
    inputs: &Inputs,
    dir: &Path,
    workers: usize,
    method: &str,
) -> (Vec<(String, Vec<u8>)>, serde_json::Value) {
    let tag = format!("run-{workers}-{method}");
    let (out, att, summary) = (
        dir.join(format!("{tag}.npy")),
        dir.join(format!("{tag}-att")),
        dir.join(format!("{tag}.json")),
    );
    let mut cmd = Command::new(exe());
    cmd.arg("run");
    common_args(&mut cmd, inputs, &out, &att);
    cmd.args(["--workers", &workers.to_string(), "--method", method])
        .arg("--summary-json")
        .arg(&summary);
    check(
        cmd.output().unwrap(),
        &format!("distgat run --workers {workers} --method {method}"),
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    // The command's phases add up to its total, and the job is timed as the coordinator
    // timed it or longer (the client waits for the reply).
    let secs = &summary["command_seconds"];
    let phase = |k: &str| {
        secs[k]
            .as_f64()
            .unwrap_or_else(|| panic!("no {k}: {summary}"))
    };
    let parts = phase("partitioning") + phase("starting") + phase("job") + phase("stopping");
    assert!(parts <= phase("total") + 1e-3, "{secs}");
    assert!(phase("partitioning") > 0.0, "{secs}");
    assert!(
        phase("job") >= summary["seconds"].as_f64().unwrap(),
        "{secs}"
    );
    // Its workers share the machine and the files: they write their rows themselves.
    assert_eq!(summary["output_rows"], "written", "{summary}");
    // Without --threads-per-worker, every worker computes on all the cores it may use.
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    for w in summary["workers"].as_array().unwrap() {
        assert_eq!(w["threads"].as_u64(), Some(cores), "{w}");
    }
    (files(&out, &att), summary)
}

/// Halo bytes on the wire are the plan's minimum plus at most 5% protocol overhead (and,
/// for tiny halos, a fixed ~100-byte message header per peer).
fn check_halo_bytes(summary: &serde_json::Value, what: &str) {
    let workers = summary["workers"].as_array().unwrap();
    let (mut total_sent, mut total_planned) = (0.0, 0.0);
    for w in workers {
        for l in w["layers"].as_array().unwrap() {
            let sent = l["halo_bytes_sent"].as_f64().unwrap();
            let planned = l["halo_bytes_planned"].as_f64().unwrap();
            total_sent += sent;
            total_planned += planned;
            assert!(
                sent >= planned && sent <= planned * 1.05 + 128.0 * workers.len() as f64,
                "{what}: part {} layer {}: sent {sent}, planned {planned}",
                w["part"],
                l["layer"]
            );
        }
    }
    if total_planned > 0.0 {
        eprintln!(
            "{what}: halo bytes sent / planned = {:.4}",
            total_sent / total_planned
        );
    }
}

fn assert_identical(case: &str, workers: &[usize], methods: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = reference(case);
    let want = infer(&inputs, tmp.path());
    for &k in workers {
        for &method in methods {
            let (got, summary) = run(&inputs, tmp.path(), k, method);
            assert_eq!(got.len(), want.len());
            for ((name, a), (_, b)) in got.iter().zip(&want) {
                assert!(
                    a == b,
                    "{case}, {k} workers, {method}: {name} differs from distgat infer"
                );
            }
            check_halo_bytes(&summary, &format!("{case} K={k} {method}"));
        }
    }
}

#[test]
fn cora_is_bitwise_identical_for_1_to_8_workers() {
    assert_identical("cora-gat", &[1, 2, 3, 4, 8], &["metis", "random"]);
}

#[test]
fn rmat_is_bitwise_identical_for_1_to_8_workers() {
    assert_identical("rmat-n5000", &[1, 2, 3, 4, 8], &["metis", "random"]);
}

#[test]
fn small_reference_cases_are_bitwise_identical() {
    for case in ["er-n200", "quirks-n40-loops", "quirks-n40-noloops"] {
        assert_identical(case, &[2, 3, 8], &["metis", "random"]);
    }
}

#[test]
fn every_attention_kind_is_bitwise_identical_for_1_to_4_workers() {
    // GATConv with residual and edge features, GATv2Conv (raw and transformed halo rows,
    // shared weights, edge features without loops), TransformerConv (beta, edge features
    // in keys and values, no root).
    for case in [
        "gat-residual-edge-n120",
        "gatv2-n200",
        "gatv2-shared-edge-noloops-n150",
        "transformer-edge-beta-n200",
        "transformer-mean-noroot-n150",
    ] {
        assert_identical(case, &[1, 2, 3, 4], &["random"]);
        assert_identical(case, &[3], &["metis"]);
    }
}

#[test]
fn edge_features_travel_in_the_shards() {
    // Partition once with the edge features: the shards keep their edges' rows, and a run
    // over that partition needs no edge features file (it is moved away to prove it).
    let tmp = tempfile::tempdir().unwrap();
    let case = "transformer-edge-beta-n200";
    let inputs = reference(case);
    let want = infer(&inputs, tmp.path());
    let ea = tmp.path().join("edge_attr.npy");
    std::fs::copy(inputs.edge_features.as_ref().unwrap(), &ea).unwrap();
    let dir = tmp.path().join("partition");
    let mut cmd = Command::new(exe());
    cmd.arg("partition")
        .arg("--graph")
        .arg(&inputs.graph)
        .arg("--features")
        .arg(&inputs.features)
        .arg("--edge-features")
        .arg(&ea)
        .args(["--parts", "3", "--out"])
        .arg(&dir);
    check(cmd.output().unwrap(), "distgat partition --edge-features");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["edge_features"]["size"], 3);
    std::fs::remove_file(&ea).unwrap();
    let (out, att) = (tmp.path().join("run.npy"), tmp.path().join("run-att"));
    let mut cmd = Command::new(exe());
    cmd.arg("run");
    let no_file = Inputs {
        edge_features: None,
        ..reference(case)
    };
    common_args(&mut cmd, &no_file, &out, &att);
    cmd.args(["--workers", "3", "--partition"]).arg(&dir);
    check(
        cmd.output().unwrap(),
        "distgat run --partition (edge features in shards)",
    );
    let got = files(&out, &att);
    assert_eq!(got.len(), want.len());
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        assert!(a == b, "{name} differs from distgat infer");
    }
}

/// A random graph whose halo per layer is many times tonic's 4 MiB message limit: 30k
/// nodes, 256 features, 4 x 64 heads (raw rows of 1 KiB travel), then 1 x 8.
fn big_case(dir: &Path) -> Inputs {
    let (n, e, f) = (30_000usize, 150_000usize, 256usize);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut edges: Vec<i64> = (0..e).map(|_| (next() % n as u64) as i64).collect();
    edges.extend((0..e).map(|_| (next() % n as u64) as i64));
    write_npy(&dir.join("edges.npy"), &[2, e as u64], &edges);
    let x: Vec<f32> = (0..n * f)
        .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    write_npy(&dir.join("x.npy"), &[n as u64, f as u64], &x);
    let mut uniform = |len: usize, scale: f32| -> Vec<f32> {
        (0..len)
            .map(|_| ((next() % 2001) as f32 / 1000.0 - 1.0) * scale)
            .collect()
    };
    let layers = [(f, 4usize, 64usize, true), (256, 1, 8, false)];
    write_random_gat_model(dir, &layers, &mut uniform);
    Inputs {
        graph: dir.join("edges.npy"),
        features: dir.join("x.npy"),
        model: dir.join("model.json"),
        normalize: false,
        edge_features: None,
    }
}

#[test]
fn halo_far_beyond_the_grpc_message_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = big_case(tmp.path());
    let want = infer(&inputs, tmp.path());
    let (got, summary) = run(&inputs, tmp.path(), 2, "random");
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        assert!(a == b, "{name} differs from distgat infer");
    }
    check_halo_bytes(&summary, "big case");
    let biggest = summary["workers"][0]["layers"][0]["halo_bytes_sent"]
        .as_f64()
        .unwrap();
    assert!(
        biggest > 3.0 * 4.0 * 1024.0 * 1024.0,
        "halo of {biggest} bytes is not far beyond 4 MiB"
    );
}

type Cluster = common::Children;

/// Starts `distgat <args>` and returns the address it reports, plus its stderr lines.
fn start(cluster: &mut Cluster, args: &[&str]) -> (String, mpsc::Receiver<String>) {
    let mut cmd = Command::new(exe());
    cmd.args(args)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    let (addr, stderr) = cluster.start_with_stderr(cmd, &format!("distgat {}", args.join(" ")));
    let (tx, rx) = mpsc::channel();
    let stderr = stderr.expect("stderr is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (addr, rx)
}

#[test]
fn a_killed_workers_part_moves_to_the_survivor_and_the_coordinator_runs_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = big_case(tmp.path());
    let want = infer(&inputs, tmp.path());
    let partition = tmp.path().join("partition");
    check(
        Command::new(exe())
            .arg("partition")
            .arg("--graph")
            .arg(&inputs.graph)
            .arg("--features")
            .arg(&inputs.features)
            .args(["--parts", "2", "--method", "random"])
            .arg("--out")
            .arg(&partition)
            .output()
            .unwrap(),
        "distgat partition",
    );
    let mut cluster = Cluster::default();
    let work = tmp.path().join("coordinator-work");
    let (coordinator, _) = start(
        &mut cluster,
        &[
            "coordinator",
            "--allow-run-job",
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
            work.to_str().unwrap(),
        ],
    );
    let (_, _w0) = start(&mut cluster, &["worker", "--coordinator", &coordinator]);
    let (_, w1) = start(&mut cluster, &["worker", "--coordinator", &coordinator]);
    let out = tmp.path().join("out.npy");
    let request = distgat_proto::v1::RunJobRequest {
        partition_dir: partition.display().to_string(),
        model: inputs.model.display().to_string(),
        out: out.display().to_string(),
        threads_per_worker: 1,
        ..Default::default()
    };

    // Kill worker 1 as soon as it finishes layer 0.
    let job = {
        let (c, r) = (coordinator.clone(), request.clone());
        std::thread::spawn(move || run_job(&c, r))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = w1
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("worker 1 never finished layer 0");
        if line.contains("layer done") {
            break;
        }
    }
    let mut victim = cluster.0.remove(2);
    let killed_at = Instant::now();
    victim.kill().unwrap();
    victim.wait().unwrap();
    // No spare: the surviving worker takes the lost part and restarts it alone.
    let summary = job
        .join()
        .unwrap()
        .expect("the job survives the loss of a worker");
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(30), "recovery took {took:?}");
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let recoveries = summary["recoveries"].as_array().unwrap();
    assert_eq!(recoveries.len(), 1, "{summary}");
    assert_eq!(recoveries[0]["restarted"], "part", "{summary}");
    let workers = summary["workers"].as_array().unwrap();
    assert_eq!(
        workers[0]["worker"], workers[1]["worker"],
        "both parts end on the surviving worker: {summary}"
    );
    assert!(
        std::fs::read(&out).unwrap() == want[0].1,
        "the recovered job's output differs from distgat infer"
    );
    std::fs::remove_file(&out).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The coordinator is still up: with a replacement worker the next job succeeds.
    start(&mut cluster, &["worker", "--coordinator", &coordinator]);
    let summary = run_job(&coordinator, request).expect("the next job runs");
    assert!(summary.contains("workers"));
    assert!(
        std::fs::read(&out).unwrap() == want[0].1,
        "output differs from distgat infer"
    );
}

#[test]
fn job_inputs_without_graph_are_refused_not_replaced_by_the_demo() {
    // Without --graph, `distgat run` runs the shipped Cora demo; a user who gave the job's
    // inputs but forgot --graph must get an error, not the demo's output.
    let tmp = tempfile::tempdir().unwrap();
    let inputs = reference("gatv2-n200");
    let out = tmp.path().join("out.npy");
    for flags in [
        vec!["--features".into(), inputs.features.display().to_string()],
        vec!["--model".into(), inputs.model.display().to_string()],
        vec!["--normalize-features".into(), "none".into()],
        vec![
            "--edge-features".into(),
            inputs.features.display().to_string(),
        ],
    ] {
        let output = Command::new(exe())
            .arg("run")
            .args(&flags)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?}: ran anyway\n{stderr}");
        assert!(stderr.contains("--graph"), "{flags:?}: {stderr}");
        assert!(!out.exists(), "{flags:?}: wrote the demo's output");
    }
}

/// The gatv2-n200 case and its METIS partition into 2 parts (features in the shards), made
/// in `tmp`.
fn gatv2_in_two_parts(tmp: &Path) -> (Inputs, PathBuf) {
    let inputs = reference("gatv2-n200");
    let dir = tmp.join("partition");
    let mut cmd = Command::new(exe());
    cmd.arg("partition")
        .arg("--graph")
        .arg(&inputs.graph)
        .arg("--features")
        .arg(&inputs.features)
        .args(["--parts", "2", "--out"])
        .arg(&dir);
    check(cmd.output().unwrap(), "distgat partition");
    (inputs, dir)
}

#[test]
fn a_reused_partition_refuses_features_other_than_its_shards() {
    // The shards carry their feature rows; a different features file would be ignored
    // (exit 0, the old numbers), so it is refused.
    let tmp = tempfile::tempdir().unwrap();
    let (inputs, dir) = gatv2_in_two_parts(tmp.path());
    let bytes = std::fs::read(&inputs.features).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    let mut x: Vec<f32> = npy.into_vec().unwrap();
    x[0] += 1.0;
    let other = tmp.path().join("other.npy");
    write_npy(&other, &shape, &x);
    let (out, att) = (tmp.path().join("run.npy"), tmp.path().join("att"));
    let mut cmd = Command::new(exe());
    cmd.arg("run");
    let changed = Inputs {
        features: other.clone(),
        ..reference("gatv2-n200")
    };
    common_args(&mut cmd, &changed, &out, &att);
    cmd.args(["--workers", "2", "--partition"]).arg(&dir);
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "ran with stale features:\n{stderr}"
    );
    assert!(
        stderr.contains("other.npy") && stderr.contains("differs from the features"),
        "{stderr}"
    );
    assert!(!out.exists());
    // The check runs beside the job: whichever ends first, nothing half-written is left.
    for dir in [tmp.path(), att.as_path()] {
        let partial: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial") || n.starts_with("layer"))
            .collect();
        assert!(partial.is_empty(), "left behind in {dir:?}: {partial:?}");
    }
    // A NaN in the file is named by its row and column, not as a different file.
    x[0] -= 1.0;
    x[3 * shape[1] as usize + 2] = f32::NAN;
    write_npy(&other, &shape, &x);
    let mut cmd = Command::new(exe());
    cmd.arg("run");
    common_args(&mut cmd, &changed, &out, &att);
    cmd.args(["--workers", "2", "--partition"]).arg(&dir);
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "ran with a NaN:\n{stderr}");
    assert!(
        stderr.contains("other.npy") && stderr.contains("row 3, column 2"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn a_reused_partition_refuses_another_graph_and_runs_its_own() {
    // Without attention output no part of the job reads the graph file: the coordinator
    // checks it against the partition beside the job, and commits nothing unless it is
    // the partition's own.
    let tmp = tempfile::tempdir().unwrap();
    let (inputs, dir) = gatv2_in_two_parts(tmp.path());
    // The same edges but the last one reversed: same size, another graph.
    let bytes = std::fs::read(&inputs.graph).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    let mut ids: Vec<i64> = npy.into_vec().unwrap();
    let e = shape[1] as usize;
    ids.swap(e - 1, 2 * e - 1);
    let other = tmp.path().join("other-graph.npy");
    write_npy(&other, &shape, &ids);
    let run_with = |graph: &Path, out: &Path, extra: &[&std::ffi::OsStr]| {
        let mut cmd = Command::new(exe());
        cmd.arg("run")
            .arg("--graph")
            .arg(graph)
            .arg("--features")
            .arg(&inputs.features)
            .arg("--model")
            .arg(&inputs.model)
            .arg("--out")
            .arg(out)
            .args(["--workers", "2", "--partition"])
            .arg(&dir)
            .args(extra);
        cmd.output().unwrap()
    };
    let out = tmp.path().join("run.npy");
    let output = run_with(&other, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "ran on another graph:\n{stderr}");
    assert!(
        stderr.contains("--graph")
            && stderr.contains("other-graph.npy")
            && stderr.contains("another graph"),
        "{stderr}"
    );
    assert!(!out.exists());
    // With attention output the graph is read whole, and refused the same way, before
    // anything is created.
    let att = tmp.path().join("att");
    let output = run_with(&other, &out, &["--attention-dir".as_ref(), att.as_os_str()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--graph") && stderr.contains("other-graph.npy"),
        "{stderr}"
    );
    assert!(!out.exists() && !att.exists(), "{stderr}");
    let partial: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(partial.is_empty(), "left behind: {partial:?}");
    // A node id beyond the graph's nodes is named as such, not as another graph.
    let nodes = npyz::NpyFile::new(&std::fs::read(&inputs.features).unwrap()[..])
        .unwrap()
        .shape()[0];
    let mut beyond = ids.clone();
    beyond[2 * e - 1] = nodes as i64;
    let bad = tmp.path().join("beyond.npy");
    write_npy(&bad, &shape, &beyond);
    let output = run_with(&bad, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("beyond.npy")
            && stderr.contains(&format!(
                "edge {}: target node {nodes} is beyond the graph's {nodes} nodes",
                e - 1
            )),
        "{stderr}"
    );
    // Said once, as the command's error (the coordinator logs a refused job at INFO).
    assert_eq!(
        stderr.matches("is beyond the graph's").count(),
        1,
        "{stderr}"
    );
    assert!(!out.exists(), "{stderr}");
    // Its own graph runs, with infer's bits, and leaves no part's output file behind.
    check(
        run_with(&inputs.graph, &out, &[]),
        "distgat run on its own graph",
    );
    let want = infer(&inputs, tmp.path());
    assert_eq!(std::fs::read(&out).unwrap(), want[0].1);
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial") || n.ends_with(".rows"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn submit_watch_prints_only_the_job_id_and_upload_infers_the_format() {
    // `job=$(distgat submit ... --watch)` must capture the job id alone; an upload with no
    // --format takes the format from the file's extension, as infer does. The model needs
    // the edge features, which travel with the upload.
    let tmp = tempfile::tempdir().unwrap();
    let case = repo().join("reference/transformer-edge-beta-n200");
    let mut cluster = Cluster::default();
    let work = tmp.path().join("work");
    let (coordinator, _) = start(
        &mut cluster,
        &[
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--data-root",
            repo().to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
        ],
    );
    let (_, _w) = start(&mut cluster, &["worker", "--coordinator", &coordinator]);
    let output = Command::new(exe())
        .args([
            "submit",
            "--coordinator",
            &coordinator,
            "--upload",
            "--watch",
        ])
        .arg("--graph")
        .arg(case.join("edge_index.npy"))
        .arg("--features")
        .arg(case.join("x.npy"))
        .arg("--edge-features")
        .arg(case.join("edge_attr.npy"))
        .args(["--model", "reference/transformer-edge-beta-n200/model.json"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout holds more than the job id: {stdout:?}"
    );
    assert!(lines[0].starts_with("job-"), "{stdout:?}");
    // The final line (on stderr) says layers and parts separately, and the share of the
    // work; written to a pipe, it has no terminal escape codes.
    assert!(
        stderr.contains("layer 2/2 on 1 parts (1/1 done, 100% of the work)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in a log: {stderr:?}"
    );
}

#[test]
fn infer_off_a_terminal_logs_plain_progress_inside_each_layer() {
    // stderr is a pipe here, as in a log file: the bar is not drawn, and a plain line
    // every DISTGAT_PROGRESS_SECONDS says how far the current layer got, with no escape
    // codes (RUST_LOG=info adds the tracing lines, which must be plain too).
    let tmp = tempfile::tempdir().unwrap();
    let inputs = big_case(tmp.path());
    let output = Command::new(exe())
        .arg("infer")
        .arg("--graph")
        .arg(&inputs.graph)
        .arg("--features")
        .arg(&inputs.features)
        .arg("--model")
        .arg(&inputs.model)
        .arg("--out")
        .arg(tmp.path().join("out.npy"))
        .args(["--threads", "1"])
        .env("DISTGAT_PROGRESS_SECONDS", "0.001")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in a log: {stderr:?}"
    );
    // 150 000 edges + 30 000 self loops per layer (less the random graph's own loops,
    // which the layer replaces); the first layer (256 -> 4 x 64) takes far longer than the
    // 1 ms between lines.
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("layer 1/2 [") && l.contains("% of 1799") && l.ends_with(" edges"))
        .collect();
    assert!(
        !progress.is_empty(),
        "no progress line inside layer 1: {stderr}"
    );
    for line in progress {
        assert!(line.starts_with('['), "not a timed log line: {line:?}");
    }
}

#[test]
fn zero_workers_is_an_error_about_workers() {
    let inputs = reference("gatv2-n200");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.npy");
    // `distgat run` on the case with `extra` flags must fail; returns its stderr.
    let refused = |extra: &[&str]| -> String {
        let mut cmd = Command::new(exe());
        cmd.arg("run");
        common_args(&mut cmd, &inputs, &out, &tmp.path().join("a"));
        let output = cmd.args(extra).output().unwrap();
        assert!(!output.status.success(), "{extra:?} succeeded");
        assert!(!out.exists(), "{extra:?} left {}", out.display());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = refused(&["--workers", "0"]);
    assert!(
        stderr.contains("--workers") && !stderr.contains("--parts"),
        "{stderr}"
    );
    // A summary that cannot be written is refused before any work, naming the flag.
    let dir = tmp.path().to_str().unwrap();
    let stderr = refused(&["--workers", "2", "--summary-json", dir]);
    assert!(
        stderr.contains("--summary-json") && !stderr.contains("partitioning"),
        "{stderr}"
    );
    // More workers than nodes (200): the partitioner's refusal names --workers too.
    let stderr = refused(&["--workers", "201"]);
    assert!(
        stderr.contains("--workers: 201 workers for 200 nodes") && !stderr.contains("--parts"),
        "{stderr}"
    );
}

/// `distgat <args>` against a coordinator: stdout on success, a panic naming `what` else.
fn client(args: &[&str], what: &str) -> String {
    let output = Command::new(exe())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Issue 13's coordinator restart: a coordinator killed with SIGKILL (no shutdown at all)
/// and started again on the same work dir lists its graphs and jobs, serves a finished
/// job's output byte for byte, and reports the job that was running as failed, saying
/// why.
#[test]
fn a_coordinator_killed_with_sigkill_restarts_with_its_catalog() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = big_case(tmp.path());
    let work = tmp.path().join("work");
    let coordinator_args = |work: &Path| -> Vec<String> {
        [
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--data-root",
            tmp.path().to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let args = coordinator_args(&work);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cluster = Cluster::default();
    let (coordinator, _) = start(&mut cluster, &args);
    let (_, _w) = start(&mut cluster, &["worker", "--coordinator", &coordinator]);
    let submit = |coordinator: &str, watch: bool| -> String {
        let mut a = vec!["submit", "--coordinator", coordinator];
        a.extend([
            "--graph",
            inputs.graph.to_str().unwrap(),
            "--features",
            inputs.features.to_str().unwrap(),
            "--model",
            inputs.model.to_str().unwrap(),
            "--parts",
            "1",
        ]);
        if watch {
            a.push("--watch");
        }
        client(&a, "distgat submit").trim().to_string()
    };
    let done = submit(&coordinator, true);
    let before = tmp.path().join("before.npy");
    client(
        &[
            "fetch",
            "--coordinator",
            &coordinator,
            &done,
            "--out",
            before.to_str().unwrap(),
        ],
        "distgat fetch",
    );
    // A second job, kept running: its worker is stopped once the job runs.
    let running = submit(&coordinator, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client(
            &["status", "--coordinator", &coordinator, "--json", &running],
            "distgat status",
        );
        if status.contains("\"state\":\"running\"") || status.contains("\"state\": \"running\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the job never ran: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let worker_pid = cluster.0[1].id();
    let stop = Command::new("kill")
        .args(["-STOP", &worker_pid.to_string()])
        .status()
        .unwrap();
    assert!(stop.success());
    // SIGKILL: the coordinator gets no chance to record anything more.
    let mut killed = cluster.0.remove(0);
    killed.kill().unwrap();
    killed.wait().unwrap();

    let (restarted, _) = start(&mut cluster, &args);
    let graphs = client(&["graphs", "--coordinator", &restarted], "distgat graphs");
    assert!(graphs.contains("graph-"), "{graphs}");
    let jobs = client(
        &["status", "--coordinator", &restarted, "--json"],
        "distgat status",
    );
    assert!(
        jobs.contains(&done) && jobs.contains(&running),
        "the restarted coordinator lists: {jobs}"
    );
    let finished = client(
        &["status", "--coordinator", &restarted, "--json", &done],
        "distgat status",
    );
    assert!(finished.contains("succeeded"), "{finished}");
    let lost = client(
        &["status", "--coordinator", &restarted, "--json", &running],
        "distgat status",
    );
    assert!(
        lost.contains("failed") && lost.contains("coordinator stopped while the job was running"),
        "{lost}"
    );
    let after = tmp.path().join("after.npy");
    client(
        &[
            "fetch",
            "--coordinator",
            &restarted,
            &done,
            "--out",
            after.to_str().unwrap(),
        ],
        "distgat fetch",
    );
    assert!(std::fs::read(&before).unwrap() == std::fs::read(&after).unwrap());
    let _ = Command::new("kill")
        .args(["-KILL", &worker_pid.to_string()])
        .status();
}

//! Workers that cannot see the coordinator's files (shard source `stream`): each worker
//! process runs in its own mount namespace with a tmpfs mounted over the directory that
//! holds the coordinator's data root and work dir, so the job succeeds only if every
//! input arrives over gRPC. Its output must be byte-identical to `distgat infer`.
//!
//! Needs `unshare --mount` and `mount -t tmpfs` (root, as here and in CI). Where they are
//! unavailable the test fails with a message saying so; it is skipped only when
//! `DISTGAT_SKIP_UNSHARE_TESTS=1` is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use distgat_proto::v1::RunJobRequest;

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_distgat")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run_job(coordinator: &str, request: RunJobRequest) -> Result<serde_json::Value, String> {
    common::run_job(coordinator, request).map(|json| serde_json::from_str(&json).unwrap())
}

fn check(output: std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether this process can make a private mount namespace with a tmpfs in it.
fn unshare_works() -> Result<(), String> {
    let probe = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs none '{}' && exit 0",
            probe.path().display()
        ))
        .output()
        .map_err(|e| format!("running unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn per_worker<'a>(summary: &'a serde_json::Value, key: &str) -> Vec<&'a serde_json::Value> {
    summary["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w[key])
        .collect()
}

#[test]
fn workers_without_the_coordinators_files_compute_infers_bytes() {
    if let Err(why) = unshare_works() {
        if std::env::var("DISTGAT_SKIP_UNSHARE_TESTS").as_deref() == Ok("1") {
            eprintln!("SKIPPED (DISTGAT_SKIP_UNSHARE_TESTS=1): unshare --mount unavailable: {why}");
            return;
        }
        panic!(
            "this test needs `unshare --mount --propagation private` and `mount -t tmpfs` \
             (run as root), which failed: {why}. Set DISTGAT_SKIP_UNSHARE_TESTS=1 to skip it \
             explicitly."
        );
    }
    // The coordinator's files, all under `hidden`: workers see an empty tmpfs there.
    let hidden = tempfile::tempdir().unwrap();
    let (data, work) = (hidden.path().join("data"), hidden.path().join("work"));
    std::fs::create_dir_all(&data).unwrap();
    // Inputs copied under the data root, so no worker can find them in the repository.
    let copy = |from: &str, to: &str| {
        std::fs::create_dir_all(data.join(to).parent().unwrap()).unwrap();
        std::fs::copy(repo().join(from), data.join(to)).unwrap();
        data.join(to)
    };
    let cora_graph = copy("data/cora/edges.npy", "cora/edges.npy");
    let cora_x = copy("data/cora/features.npy", "cora/features.npy");
    let cora_model = copy("reference/cora-gat/model.json", "cora/model.json");
    let cora_weights =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&cora_model).unwrap())
            .unwrap()["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["weights"].as_str().unwrap().to_string())
            .collect::<std::collections::BTreeSet<_>>();
    for w in &cora_weights {
        copy(&format!("reference/cora-gat/{w}"), &format!("cora/{w}"));
    }
    let case = "reference/transformer-edge-beta-n200";
    let tg = copy(&format!("{case}/edge_index.npy"), "edge/edge_index.npy");
    let tx = copy(&format!("{case}/x.npy"), "edge/x.npy");
    let te = copy(&format!("{case}/edge_attr.npy"), "edge/edge_attr.npy");
    let tm = copy(&format!("{case}/model.json"), "edge/model.json");
    copy(
        &format!("{case}/model.safetensors"),
        "edge/model.safetensors",
    );

    // The reference outputs, in one process.
    let refs = tempfile::tempdir().unwrap();
    let infer = |graph: &Path, x: &Path, model: &Path, extra: &[&Path], out: &Path| {
        let mut cmd = Command::new(exe());
        cmd.arg("infer")
            .arg("--graph")
            .arg(graph)
            .arg("--features")
            .arg(x)
            .arg("--model")
            .arg(model)
            .arg("--out")
            .arg(out);
        if extra.is_empty() {
            cmd.args(["--normalize-features", "row"]);
        } else {
            cmd.arg("--edge-features").arg(extra[0]);
        }
        check(cmd.output().unwrap(), "distgat infer");
        std::fs::read(out).unwrap()
    };
    let cora_ref = infer(
        &cora_graph,
        &cora_x,
        &cora_model,
        &[],
        &refs.path().join("c.npy"),
    );
    let edge_ref = infer(&tg, &tx, &tm, &[&te], &refs.path().join("e.npy"));

    // Partitions without feature rows (Cora) and without edge attributes (the edge case)
    // in the shards, so feature rows and edge attribute rows are streamed as well.
    std::fs::create_dir_all(work.join("parts")).unwrap();
    let partition = |graph: &Path, x: &Path, name: &str| {
        let dir = work.join("parts").join(name);
        check(
            Command::new(exe())
                .arg("partition")
                .arg("--graph")
                .arg(graph)
                .arg("--features")
                .arg(x)
                .args(["--shared-features", "--parts", "2", "--out"])
                .arg(&dir)
                .output()
                .unwrap(),
            "distgat partition",
        );
        dir
    };
    let cora_part = partition(&cora_graph, &cora_x, "cora");
    let edge_part = partition(&tg, &tx, "edge");

    let shard_sizes = |part: &Path| -> Vec<(String, u64)> {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(part.join("manifest.json")).unwrap())
                .unwrap();
        m["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["blake3"].as_str().unwrap().to_string(),
                    s["bytes"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // The workers' cache holds the larger Cora shard and no more: the edge case's shard
    // pushes that one out (the smaller Cora shard may fit beside it).
    let sizes = |p: &Path| {
        shard_sizes(p)
            .into_iter()
            .map(|s| s.1)
            .collect::<Vec<u64>>()
    };
    let (cora_sizes, edge_sizes) = (sizes(&cora_part), sizes(&edge_part));
    let cache_cap = *cora_sizes.iter().max().unwrap();
    assert!(
        edge_sizes.iter().all(|&e| e <= cache_cap),
        "shard sizes {cora_sizes:?} and {edge_sizes:?}"
    );

    let mut cluster = common::Children::default();
    let mut coordinator = Command::new(exe());
    coordinator
        .args(["coordinator", "--allow-run-job", "--listen", "127.0.0.1:0"])
        .arg("--data-root")
        .arg(&data)
        .arg("--work-dir")
        .arg(&work);
    let addr = cluster.start(coordinator, "the coordinator");
    // Each worker's own work dir, outside the hidden tree.
    let worker_dirs = tempfile::tempdir().unwrap();
    for k in 0..2 {
        let wdir = worker_dirs.path().join(format!("w{k}"));
        let mut w = Command::new("unshare");
        w.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs none '{}' && exec '{}' worker --coordinator {addr} \
                 --listen 127.0.0.1:0 --work-dir '{}' --shard-cache-max-bytes {cache_cap}",
                hidden.path().display(),
                exe(),
                wdir.display()
            ));
        cluster.start(w, &format!("worker {k} (own mount namespace)"));
    }

    let job = |part: &Path, model: &Path, x: &Path, edge: Option<&Path>, out: &str, src: &str| {
        let out = work.join(out);
        let result = run_job(
            &addr,
            RunJobRequest {
                partition_dir: part.display().to_string(),
                model: model.display().to_string(),
                features: x.display().to_string(),
                normalize_rows: edge.is_none(),
                out: out.display().to_string(),
                edge_features: edge.map(|e| e.display().to_string()).unwrap_or_default(),
                threads_per_worker: 1,
                shard_source: src.into(),
                ..Default::default()
            },
        );
        result.map(|summary| (std::fs::read(&out).unwrap(), summary))
    };

    // 1. Cora, streamed: byte-identical, every shard sent in full.
    let (bytes, s) = job(&cora_part, &cora_model, &cora_x, None, "c1.npy", "stream").unwrap();
    assert!(
        bytes == cora_ref,
        "Cora streamed differs from distgat infer"
    );
    assert_eq!(s["shard_source"], "stream", "{s}");
    assert_eq!(s["output_rows"], "sent", "{s}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cora_part.join("manifest.json")).unwrap())
            .unwrap();
    let shard_total: u64 = manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum();
    let sent: u64 = per_worker(&s, "shard_bytes_streamed")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(sent, shard_total, "{s}");
    assert!(
        per_worker(&s, "shard_cache")
            .iter()
            .all(|c| *c == "fetched"),
        "{s}"
    );
    assert!(
        per_worker(&s, "input_bytes_streamed")
            .iter()
            .all(|b| b.as_u64().unwrap() > 0),
        "{s}"
    );

    // 2. The same partition again: every shard from the workers' caches, no shard byte sent.
    let (bytes, s) = job(&cora_part, &cora_model, &cora_x, None, "c2.npy", "stream").unwrap();
    assert!(
        bytes == cora_ref,
        "Cora from the cache differs from distgat infer"
    );
    assert!(
        per_worker(&s, "shard_cache").iter().all(|c| *c == "cached"),
        "{s}"
    );
    assert!(
        per_worker(&s, "shard_bytes_streamed")
            .iter()
            .all(|b| b.as_u64() == Some(0)),
        "{s}"
    );

    // 3. Damaged cache entries (one flipped byte, one truncated) are detected and fetched
    //    again.
    for (k, damage) in ["flip", "truncate"].iter().enumerate() {
        let shards = worker_dirs.path().join(format!("w{k}/shards"));
        let entries: Vec<_> = std::fs::read_dir(&shards)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "worker {k}'s cache: {entries:?}");
        let mut b = std::fs::read(&entries[0]).unwrap();
        if *damage == "flip" {
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
        } else {
            b.truncate(b.len() / 3);
        }
        std::fs::write(&entries[0], b).unwrap();
    }
    let (bytes, s) = job(&cora_part, &cora_model, &cora_x, None, "c3.npy", "stream").unwrap();
    assert!(
        bytes == cora_ref,
        "Cora after re-fetching differs from distgat infer"
    );
    assert!(
        per_worker(&s, "shard_cache")
            .iter()
            .all(|c| *c == "refetched"),
        "{s}"
    );
    let sent: u64 = per_worker(&s, "shard_bytes_streamed")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(sent, shard_total, "{s}");

    // 4. Edge features streamed as rows of each part's local edges.
    let (bytes, s) = job(&edge_part, &tm, &tx, Some(&te), "e1.npy", "stream").unwrap();
    assert!(
        bytes == edge_ref,
        "edge-feature case streamed differs from distgat infer"
    );
    assert!(
        per_worker(&s, "shard_cache")
            .iter()
            .all(|c| *c == "fetched"),
        "{s}"
    );

    //    Each cache held its Cora shard; the edge case's shard went in, and where the two
    //    are over the --shard-cache-max-bytes limit (at least the worker of the larger
    //    Cora shard), it pushed the older Cora shard out. No cache is over the limit.
    let edge_hashes: Vec<String> = shard_sizes(&edge_part).into_iter().map(|s| s.0).collect();
    let mut evicted = 0;
    for k in 0..2 {
        let shards = worker_dirs.path().join(format!("w{k}/shards"));
        let files: Vec<(String, u64)> = std::fs::read_dir(&shards)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, e.metadata().unwrap().len())
            })
            .filter(|(n, _)| n.ends_with(".safetensors"))
            .collect();
        let held: u64 = files.iter().map(|f| f.1).sum();
        assert!(
            held <= cache_cap,
            "worker {k}'s cache: {files:?} over {cache_cap}"
        );
        assert!(
            files.iter().any(|(n, _)| edge_hashes
                .iter()
                .any(|h| *h == n.trim_end_matches(".safetensors"))),
            "worker {k}'s cache lacks the edge case's shard: {files:?}"
        );
        evicted += usize::from(files.len() == 1);
    }
    assert!(evicted >= 1, "no worker's cache pushed its Cora shard out");

    // 5. The control: with shard source shared these workers cannot open the files, so
    //    the job fails (if it passed, the namespace would not hide anything).
    let err = job(&cora_part, &cora_model, &cora_x, None, "c4.npy", "shared")
        .map(|(_, summary)| summary)
        .expect_err("workers in their own mount namespace read the coordinator's files");
    assert!(
        err.contains("No such file") || err.contains("not found"),
        "{err}"
    );
    // Fetching from a job that is not running is NOT_FOUND.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = distgat_proto::v1::coordinator_client::CoordinatorClient::connect(
            format!("http://{addr}"),
        )
        .await
        .unwrap();
        let status = client
            .fetch_shard(distgat_proto::v1::FetchShardRequest {
                job_id: "job-1".into(),
                part: 0,
                worker_id: "worker-1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{status}");
        let status = client
            .fetch_inputs(distgat_proto::v1::FetchInputsRequest {
                job_id: "job-1".into(),
                part: 0,
                worker_id: "worker-1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{status}");
    });
    // An unknown shard source is refused by name.
    let err = job(&cora_part, &cora_model, &cora_x, None, "c5.npy", "nfs")
        .err()
        .unwrap();
    assert!(err.contains("shard_source") && err.contains("nfs"), "{err}");
    // Workers that are sent their shards may not see the coordinator's files: writing its
    // output file themselves is refused by name (before any file is made).
    let out = work.join("c6.npy");
    let err = run_job(
        &addr,
        RunJobRequest {
            partition_dir: cora_part.display().to_string(),
            model: cora_model.display().to_string(),
            features: cora_x.display().to_string(),
            normalize_rows: true,
            out: out.display().to_string(),
            shard_source: "stream".into(),
            workers_write_output: true,
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(
        err.contains("workers_write_output") && err.contains("\"stream\""),
        "{err}"
    );
    assert!(!out.exists());
}

/// `distgat run --shard-source shared` (workers open the files) and `stream` give
/// `distgat infer`'s bytes; an unknown value is an error naming the flag.
#[test]
fn run_with_either_shard_source_is_bitwise_identical() {
    let dir = tempfile::tempdir().unwrap();
    let case = repo().join("reference/transformer-edge-beta-n200");
    let out = |name: &str| dir.path().join(name);
    let base = |cmd: &mut Command, o: &Path| {
        cmd.arg("--graph")
            .arg(case.join("edge_index.npy"))
            .arg("--features")
            .arg(case.join("x.npy"))
            .arg("--model")
            .arg(case.join("model.json"))
            .arg("--edge-features")
            .arg(case.join("edge_attr.npy"))
            .arg("--out")
            .arg(o);
    };
    let mut infer = Command::new(exe());
    infer.arg("infer");
    base(&mut infer, &out("infer.npy"));
    check(infer.output().unwrap(), "distgat infer");
    let want = std::fs::read(out("infer.npy")).unwrap();
    for src in ["shared", "stream"] {
        let mut run = Command::new(exe());
        run.arg("run");
        base(&mut run, &out(&format!("{src}.npy")));
        run.args(["--workers", "3", "--shard-source", src])
            .arg("--summary-json")
            .arg(out(&format!("{src}.json")));
        check(
            run.output().unwrap(),
            &format!("distgat run --shard-source {src}"),
        );
        assert!(
            std::fs::read(out(&format!("{src}.npy"))).unwrap() == want,
            "--shard-source {src} differs from distgat infer"
        );
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out(&format!("{src}.json"))).unwrap())
                .unwrap();
        assert_eq!(s["shard_source"], src, "{s}");
    }
    let mut bad = Command::new(exe());
    bad.arg("run");
    base(&mut bad, &out("bad.npy"));
    let o = bad.args(["--shard-source", "nfs"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--shard-source") && err.contains("nfs"),
        "{err}"
    );
    assert!(!out("bad.npy").exists());
}

/// A worker whose --work-dir cannot be used stops at once with an error naming it.
#[test]
fn an_unusable_worker_work_dir_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let o = Command::new(exe())
        .args(["worker", "--coordinator", "127.0.0.1:9", "--work-dir"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--work-dir") && err.contains("a-file"),
        "{err}"
    );
}

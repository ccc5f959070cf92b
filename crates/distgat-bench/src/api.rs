//! `distgat-bench api`: a job through the client API of a standing cluster (coordinator and
//! K worker processes, as `cluster/local.sh` starts them) against `distgat infer` on the
//! same case in the same run: submit-to-succeeded time, fetch time and throughput, and
//! whether the fetched output is byte-identical.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use distgat_cli::run::{spawn_server, Children};
use distgat_client::{Client, Selection, Submit};

use crate::{median, timed};

pub struct ApiCase<'a> {
    pub dir: &'a Path,
    pub workers: usize,
    pub repeats: usize,
    pub cores: usize,
}

pub fn api_bench(distgat: &Path, case: ApiCase<'_>) -> anyhow::Result<()> {
    let dir = case.dir;
    let mut infer = Vec::new();
    for _ in 0..case.repeats {
        infer.push(timed(
            Command::new(distgat)
                .arg("infer")
                .args(["--graph", "edge_index.npy", "--features", "x.npy"])
                .args(["--model", "model.json", "--out", "infer.npy"])
                .args(["--threads", &case.cores.to_string()])
                .current_dir(dir),
        )?);
    }
    let infer_ms = median(infer);
    let infer_bytes = std::fs::read(dir.join("infer.npy"))?;

    let mut servers = Children::default();
    let work = dir.join("api-work");
    let coordinator = spawn_server(
        distgat,
        &[
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--data-root",
            &dir.display().to_string(),
            "--work-dir",
            &work.display().to_string(),
        ],
        "coordinator",
        &mut servers,
    )?;
    for k in 0..case.workers {
        spawn_server(
            distgat,
            &["worker", "--coordinator", &coordinator],
            &format!("worker {k}"),
            &mut servers,
        )?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = Client::connect(&coordinator).await?;
        client
            .wait_for_workers(case.workers, Duration::from_secs(60))
            .await?;
        let t = Instant::now();
        let graph = client
            .register_graph("edge_index.npy", "x.npy", "", "bench")
            .await?;
        let register_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let partition = client
            .create_partition(&graph.graph_id, case.workers as u32, "metis", 0)
            .await?;
        let partition_s = t.elapsed().as_secs_f64();
        let (mut jobs, mut fetches, mut writes) = (Vec::new(), Vec::new(), Vec::new());
        let out = dir.join("api.npy");
        let mut bytes = 0;
        for _ in 0..case.repeats {
            let t = Instant::now();
            let job = client
                .submit(Submit {
                    graph_id: graph.graph_id.clone(),
                    partition_id: partition.partition_id.clone(),
                    model: "model.json".into(),
                    threads_per_worker: (case.cores / case.workers).max(1) as u32,
                    ..Default::default()
                })
                .await?;
            client.wait(&job.job_id, |_| {}).await?;
            jobs.push(t.elapsed().as_secs_f64() * 1e3);
            // The fetch into memory, then the .npy write (fsync included) on its own.
            let t = Instant::now();
            let rows = client.fetch(&job.job_id, Selection::All).await?;
            fetches.push(t.elapsed().as_secs_f64() * 1e3);
            bytes = rows.values.len() * 4;
            let t = Instant::now();
            distgat_graph::write_npy(
                &out,
                &[rows.nodes.len() as u64, rows.width as u64],
                &rows.values,
            )?;
            writes.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (job_ms, fetch_ms, write_ms) = (median(jobs), median(fetches), median(writes));
        let same = std::fs::read(&out)? == infer_bytes;
        println!(
            "| workers | infer ms | register ms | partition s | job ms (submit to succeeded) | job / infer | fetch ms | fetch MB/s | .npy write ms | (job + fetch + write) / infer | identical to infer |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        println!(
            "| {} | {infer_ms:.0} | {register_ms:.0} | {partition_s:.1} | {job_ms:.0} | {:.2} | {fetch_ms:.0} | {:.0} | {write_ms:.0} | {:.2} | {same} |",
            case.workers,
            job_ms / infer_ms,
            bytes as f64 / 1e6 / (fetch_ms / 1e3),
            (job_ms + fetch_ms + write_ms) / infer_ms,
        );
        anyhow::Ok(())
    })
}

//! The client subcommands (`submit`, `status`, `watch`, `fetch`, `cancel`, `workers`,
//! `health`) over [`distgat_client`], minus the terminal handling that stays in `main`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use distgat_client::v1::{ClusterStatusResponse, JobInfo};
use distgat_client::{state_name, Client, Selection, Submit};
use serde_json::json;

/// What `distgat submit` sends.
#[derive(Debug, Clone, Default)]
pub struct SubmitConfig {
    /// A graph registered earlier; otherwise `graph` and `features` are registered first.
    pub graph_id: Option<String>,
    pub graph: Option<String>,
    pub features: Option<String>,
    /// Edge attributes `[edges, D]` registered (or uploaded) with the graph.
    pub edge_features: Option<String>,
    pub graph_format: String,
    /// Stream the local files instead of naming server-side paths.
    pub upload: bool,
    pub name: String,
    /// Instead of `graph`: build the graph from points (with `features`).
    pub neighbourhood: Option<Neighbourhood>,
    pub job: Submit,
}

/// `submit --knn K | --radius R [--max-neighbours M] [--loop] [--points P]`.
#[derive(Debug, Clone)]
pub struct Neighbourhood {
    pub spec: distgat_client::v1::NeighbourSpec,
    /// Under the data root; `None`: the features.
    pub points: Option<String>,
}

pub async fn submit(client: &mut Client, config: SubmitConfig) -> anyhow::Result<JobInfo> {
    // Refused before a graph is registered (which would otherwise stay behind).
    if config.graph.is_some() && config.job.method.eq_ignore_ascii_case("spatial") {
        anyhow::bail!(
            "--method spatial: the spatial parts are those of a neighbourhood built by \
             --knn/--radius; a --graph file has none (use metis, random or range)"
        );
    }
    let graph_id = match (&config.graph_id, &config.graph, &config.features) {
        (None, None, Some(features)) if config.neighbourhood.is_some() => {
            let nb = config.neighbourhood.clone().expect("checked");
            if config.upload {
                anyhow::bail!(
                    "--upload sends a graph file; a neighbourhood (--knn/--radius) is built \
                     from --features and --points under the coordinator's data root"
                );
            }
            eprintln!("building the neighbourhood over the coordinator's workers...");
            let info = client
                .register_neighbourhood(
                    features,
                    nb.points.as_deref(),
                    nb.spec,
                    config.job.parts,
                    &config.name,
                )
                .await
                .context("building the neighbourhood")?;
            eprintln!(
                "graph {}: {} nodes, {} edges ({} on {} parts), {} features",
                info.graph_id,
                info.nodes,
                info.edges,
                info.neighbourhood,
                info.spatial_parts,
                info.feature_width
            );
            info.graph_id
        }
        (Some(id), None, None) => id.clone(),
        (None, Some(graph), Some(features)) => {
            // An upload has no server-side file name: the format comes from the local
            // file's extension unless --format names it (as infer does).
            let graph_format = if config.upload && config.graph_format.is_empty() {
                distgat_graph::GraphFormat::from_path(Path::new(graph))
                    .map_err(|e| anyhow::anyhow!("--graph: {e}; or give --format"))?
                    .name()
                    .to_string()
            } else {
                config.graph_format.clone()
            };
            let info = if config.upload {
                client
                    .upload_graph_with_edge_features(
                        graph.as_ref(),
                        features.as_ref(),
                        config.edge_features.as_deref().map(Path::new),
                        &graph_format,
                        &config.name,
                    )
                    .await
                    .with_context(|| format!("uploading the graph {graph}"))?
            } else {
                client
                    .register_graph_with_edge_features(
                        graph,
                        features,
                        config.edge_features.as_deref(),
                        &graph_format,
                        &config.name,
                    )
                    .await
                    .context("registering the graph")?
            };
            eprintln!(
                "graph {}: {} nodes, {} edges, {} features{}",
                info.graph_id,
                info.nodes,
                info.edges,
                info.feature_width,
                if info.edge_feature_width > 0 {
                    format!(", {} edge features", info.edge_feature_width)
                } else {
                    String::new()
                }
            );
            info.graph_id
        }
        _ => anyhow::bail!(
            "give either --graph-id, or --graph and --features, or --features with --knn or \
             --radius (and optionally --points)"
        ),
    };
    let job = Submit {
        graph_id,
        ..config.job
    };
    client.submit(job).await.context("submitting the job")
}

pub fn job_json(j: &JobInfo) -> serde_json::Value {
    json!({
        "job_id": j.job_id,
        "state": state_name(j),
        "graph_id": j.graph_id,
        "partition_id": j.partition_id,
        "parts": j.parts,
        "layers": j.layers,
        "progress": j.progress.iter().map(|p| json!({
            "part": p.part,
            "worker_id": p.worker_id,
            "worker_address": p.worker_address,
            "layers_done": p.layers_done,
            "halo_bytes_sent": p.halo_bytes_sent,
            "layer_entries_done": p.layer_entries_done,
            "layer_entries_total": p.layer_entries_total,
        })).collect::<Vec<_>>(),
        "error": j.error,
        "queue_position": j.queue_position,
        "output_rows": j.output_rows,
        "output_width": j.output_width,
        "attention": j.attention,
        "seconds": j.seconds,
    })
}

/// One line per job: id, state, parts, layers done, time, error.
/// One line per job: its layers and its parts counted separately (a 2-layer model on 3
/// parts is done at "layer 2/2, 3/3 parts done", not at "6/6").
pub fn format_job(j: &JobInfo) -> String {
    let (layer, parts_done) = layer_progress(j);
    let mut line = format!(
        "{:<10} {:<12} graph {:<10} layer {layer}/{} on {} parts ({parts_done}/{} done, {:>3.0}% of the work) {:>8.2} s",
        j.job_id,
        state_name(j),
        j.graph_id,
        j.layers,
        j.parts,
        j.parts,
        // + 0.0 turns a negative zero into "0".
        work_fraction(j) * 100.0 + 0.0,
        j.seconds
    );
    if j.state == distgat_client::v1::JobState::Queued as i32 {
        line += &format!("  ({} ahead)", j.queue_position);
    }
    if !j.error.is_empty() {
        line += &format!("  error: {}", j.error);
    }
    line
}

/// The fraction of the job's work done, in [0, 1]: every part's finished layers, plus the
/// share of its current layer's attention entries aggregated (from the workers' last
/// heartbeats), over layers x parts.
pub fn work_fraction(j: &JobInfo) -> f64 {
    let whole = f64::from(j.layers) * f64::from(j.parts);
    if whole == 0.0 {
        return 0.0;
    }
    let done: f64 = j
        .progress
        .iter()
        .map(|p| {
            let partial = if p.layers_done < j.layers && p.layer_entries_total > 0 {
                p.layer_entries_done.min(p.layer_entries_total) as f64
                    / p.layer_entries_total as f64
            } else {
                0.0
            };
            f64::from(p.layers_done.min(j.layers)) + partial
        })
        .sum();
    (done / whole).clamp(0.0, 1.0)
}

/// The layer every part has finished (the slowest part's), and how many parts finished
/// all layers.
pub fn layer_progress(j: &JobInfo) -> (u32, u32) {
    let done: Vec<u32> = j.progress.iter().map(|p| p.layers_done).collect();
    let slowest = if done.len() < j.parts as usize {
        0
    } else {
        done.iter().copied().min().unwrap_or(0)
    };
    let finished = done
        .iter()
        .filter(|&&d| d >= j.layers && j.layers > 0)
        .count() as u32;
    (slowest.min(j.layers), finished)
}

pub fn workers_json(s: &ClusterStatusResponse) -> serde_json::Value {
    json!({
        "protocol_version": s.protocol_version,
        "running_job": s.running_job,
        "queued_jobs": s.queued_jobs,
        "workers": s.workers.iter().map(|w| json!({
            "worker_id": w.worker_id,
            "address": w.address,
            "healthy": w.healthy,
            "last_heartbeat_ms_ago": w.last_heartbeat_ms_ago,
            "job_id": w.job_id,
            "part": w.part,
        })).collect::<Vec<_>>(),
    })
}

pub fn format_workers(s: &ClusterStatusResponse) -> String {
    let mut out = format!(
        "{} workers ({} healthy); running job: {}; queued jobs: {}\n",
        s.workers.len(),
        s.workers.iter().filter(|w| w.healthy).count(),
        if s.running_job.is_empty() {
            "none"
        } else {
            &s.running_job
        },
        s.queued_jobs
    );
    out += "worker       address                 health     last heartbeat  job/part\n";
    for w in &s.workers {
        out += &format!(
            "{:<12} {:<23} {:<10} {:>11} ms  {}\n",
            w.worker_id,
            w.address,
            if w.healthy { "healthy" } else { "silent" },
            w.last_heartbeat_ms_ago,
            match w.part {
                Some(p) => format!("{}/{p}", w.job_id),
                None => "-".into(),
            }
        );
    }
    out.trim_end().to_string()
}

/// Parses `--nodes 1,2,3` or `--range A:B` (neither: all rows).
pub fn selection(nodes: Option<&str>, range: Option<&str>) -> anyhow::Result<Selection> {
    match (nodes, range) {
        (Some(_), Some(_)) => anyhow::bail!("--nodes and --range exclude each other"),
        (Some(list), None) => {
            let ids = list
                .split(',')
                .map(|t| {
                    t.trim()
                        .parse::<u64>()
                        .with_context(|| format!("--nodes: '{t}' is not a node id"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Selection::Nodes(ids))
        }
        (None, Some(r)) => {
            let (a, b) = r
                .split_once(':')
                .with_context(|| format!("--range '{r}': expected START:END"))?;
            let parse = |t: &str| {
                t.trim()
                    .parse::<u64>()
                    .with_context(|| format!("--range '{r}': '{t}' is not a node id"))
            };
            Ok(Selection::Range(parse(a)?, parse(b)?))
        }
        (None, None) => Ok(Selection::All),
    }
}

/// Asks a server's standard health service (over TLS when `tls` is given; health needs
/// no token); Ok once it answers SERVING.
pub async fn check_health(
    address: &str,
    service: &str,
    wait: Duration,
    tls: Option<&distgat_proto::Tls>,
) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let endpoint = distgat_proto::secure_endpoint(address, tls)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let last = match endpoint.connect().await {
            Ok(channel) => {
                let reply = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: service.to_string(),
                    })
                    .await;
                match reply {
                    Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
                    Ok(r) => format!(
                        "status {:?}",
                        ServingStatus::try_from(r.get_ref().status)
                            .unwrap_or(ServingStatus::Unknown)
                    ),
                    Err(s) => format!("{}: {}", s.code(), s.message()),
                }
            }
            Err(e) => format!("connecting: {e}"),
        };
        if tokio::time::Instant::now() >= deadline {
            let what = if service.is_empty() {
                "as a whole (the '' service)".to_string()
            } else {
                format!("'{service}'")
            };
            anyhow::bail!("{address} is not serving {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes `text` to `path` atomically (address files are read by scripts while written).
pub fn write_addr_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let file = distgat_graph::AtomicFile::create(path)
        .with_context(|| format!("address file {}", path.display()))?;
    use std::io::Write;
    let mut f = file.as_file();
    writeln!(f, "{text}").with_context(|| format!("address file {}", path.display()))?;
    file.commit()
        .with_context(|| format!("address file {}", path.display()))?;
    Ok(())
}

/// The graphs as a table (or a JSON array with `json`).
pub fn format_graphs(graphs: &[distgat_client::v1::GraphInfo], json: bool) -> String {
    if json {
        let rows: Vec<serde_json::Value> = graphs
            .iter()
            .map(|g| {
                serde_json::json!({
                    "graph_id": g.graph_id, "name": g.name, "nodes": g.nodes,
                    "edges": g.edges, "feature_width": g.feature_width,
                    "edge_feature_width": g.edge_feature_width, "source": g.source,
                    "neighbourhood": g.neighbourhood, "spatial_parts": g.spatial_parts,
                })
            })
            .collect();
        return serde_json::Value::Array(rows).to_string();
    }
    let mut out = format!(
        "{:<12} {:>10} {:>12} {:>8} {:>6}  {:<13} name",
        "graph", "nodes", "edges", "features", "edge", "source"
    );
    for g in graphs {
        // A built graph's source says how: "knn:16 (4 parts)".
        let source = if g.neighbourhood.is_empty() {
            g.source.clone()
        } else {
            format!("{} ({} parts)", g.neighbourhood, g.spatial_parts)
        };
        out.push_str(&format!(
            "\n{:<12} {:>10} {:>12} {:>8} {:>6}  {:<13} {}",
            g.graph_id, g.nodes, g.edges, g.feature_width, g.edge_feature_width, source, g.name
        ));
    }
    out
}

/// The partitions as a table (or a JSON array with `json`).
pub fn format_partitions(partitions: &[distgat_client::v1::PartitionInfo], json: bool) -> String {
    if json {
        let rows: Vec<serde_json::Value> = partitions
            .iter()
            .map(|p| {
                serde_json::json!({
                    "partition_id": p.partition_id, "graph_id": p.graph_id, "parts": p.parts,
                    "method": p.method, "edge_cut": p.edge_cut, "halo_rows": p.halo_rows,
                    "seconds": p.seconds,
                })
            })
            .collect();
        return serde_json::Value::Array(rows).to_string();
    }
    let mut out = format!(
        "{:<16} {:<12} {:>5} {:<8} {:>10} {:>10}",
        "partition", "graph", "parts", "method", "edge cut", "halo rows"
    );
    for p in partitions {
        out.push_str(&format!(
            "\n{:<16} {:<12} {:>5} {:<8} {:>10} {:>10}",
            p.partition_id, p.graph_id, p.parts, p.method, p.edge_cut, p.halo_rows
        ));
    }
    out
}

/// Bytes for people: `512 B`, `3.4 MiB`, `1.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use distgat_client::v1::{JobInfo, PartProgress};

    use super::{format_job, work_fraction};

    fn part(layers_done: u32, done: u64, total: u64) -> PartProgress {
        PartProgress {
            layers_done,
            layer_entries_done: done,
            layer_entries_total: total,
            ..Default::default()
        }
    }

    /// The share of the work counts finished layers and the reported share of the current
    /// layer, per part, over layers x parts; a finished part's stale in-layer numbers and
    /// an in-layer count above its total do not push it past its share.
    #[test]
    fn work_fraction_counts_layers_and_the_current_layers_edges() {
        let job = JobInfo {
            layers: 2,
            parts: 2,
            progress: vec![part(1, 50, 200), part(2, 7, 7)],
            ..Default::default()
        };
        // (1 + 0.25) + 2 over 4.
        assert_eq!(work_fraction(&job), 3.25 / 4.0);
        assert!(
            format_job(&job).contains("layer 1/2 on 2 parts (1/2 done,  81% of the work)"),
            "{}",
            format_job(&job)
        );
        let over = JobInfo {
            layers: 1,
            parts: 1,
            progress: vec![part(0, 900, 100)],
            ..Default::default()
        };
        assert_eq!(work_fraction(&over), 1.0);
        let empty = JobInfo::default();
        assert_eq!(work_fraction(&empty), 0.0);
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(super::human_bytes(0), "0 B");
        assert_eq!(super::human_bytes(1023), "1023 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 << 30), "3.0 GiB");
    }
}

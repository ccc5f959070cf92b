//! Submit a job to a running cluster, follow it, and fetch the output into a `.npy`.
//!
//! ```text
//! cargo run -p distgat-client --example submit -- \
//!     127.0.0.1:50051 data/cora/edges.npy data/cora/features.npy \
//!     reference/cora-gat/model.json out.npy
//! ```
//! Paths are on the coordinator's side, under its data root. Features are row-normalised
//! (PyG's NormalizeFeatures), as the shipped Cora model expects.

use distgat_client::{state_name, Client, Selection, Submit};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, graph, features, model, out] = args.as_slice() else {
        eprintln!("usage: submit COORDINATOR GRAPH FEATURES MODEL OUT.npy");
        std::process::exit(2);
    };
    let mut client = Client::connect(address).await?;
    let graph = client
        .register_graph(graph, features, "", "example")
        .await?;
    let job = client
        .submit(Submit {
            graph_id: graph.graph_id,
            model: model.clone(),
            normalize_features: true,
            ..Default::default()
        })
        .await?;
    println!("submitted {}", job.job_id);
    let done = client
        .wait(&job.job_id, |info| {
            let layers: u32 = info.progress.iter().map(|p| p.layers_done).sum();
            println!(
                "{} {} layers {layers}/{}",
                info.job_id,
                state_name(info),
                info.layers * info.parts
            );
        })
        .await?;
    let rows = client
        .fetch_to_npy(&done.job_id, Selection::All, out.as_ref())
        .await?;
    println!(
        "wrote {} rows of {} columns to {out}",
        rows.nodes.len(),
        rows.width
    );
    Ok(())
}

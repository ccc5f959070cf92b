//! Times the phases of `distgat neighbours --knn K` (what the CLI runs: read the points,
//! build, write the int64 `[2, E]` `.npy`). Not a test: `cargo run --release -p
//! distgat-neighbours --example knn_phases -- POINTS.npy K OUT.npy` (threads: the rayon
//! pool, `RAYON_NUM_THREADS`).

use std::path::Path;
use std::time::Instant;

use distgat_neighbours::{knn_graph, Execution, Options, Points};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let points_path = Path::new(&args[0]);
    let k: usize = args[1].parse().expect("K");
    let out = Path::new(&args[2]);
    let t0 = Instant::now();
    let points = Points::read_npy(points_path).expect("points");
    let t1 = Instant::now();
    let options = Options {
        execution: Execution::Parallel,
        ..Options::default()
    };
    let nb = knn_graph(&points, k, &options).expect("knn");
    let t2 = Instant::now();
    nb.write_npy(out).expect("write");
    let t3 = Instant::now();
    println!(
        "n {} dim {} k {k} threads {}: read {:.3} s, build {:.3} s, write {:.3} s, total {:.3} s",
        points.len(),
        points.dim(),
        rayon::current_num_threads(),
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        (t3 - t2).as_secs_f64(),
        (t3 - t0).as_secs_f64()
    );
}

//! Measures the k-d tree against blocked brute force by dimension, to choose
//! `tree::TREE_MAX_DIM`. Not a test: `cargo run --release -p distgat-neighbours --example
//! search_threshold -- [N] [K] [DIMS...]` (defaults: 100000 16 2 3 4 6 8 12 16).

use std::time::Instant;

use distgat_neighbours::{knn_graph, Options, Points, Search};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let n = args.first().copied().unwrap_or(100_000);
    let k = args.get(1).copied().unwrap_or(16);
    let dims = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        vec![2, 3, 4, 6, 8, 12, 16]
    };
    println!(
        "N = {n}, k = {k}, {} rayon threads, uniform [0,1)^D",
        rayon::current_num_threads()
    );
    println!("| D | tree s | brute s | brute / tree |");
    println!("| ---: | ---: | ---: | ---: |");
    let mut rng = StdRng::seed_from_u64(1);
    for d in dims {
        let values: Vec<f32> = (0..n * d).map(|_| rng.random::<f32>()).collect();
        let points = Points::new(n, d, values, "points").unwrap();
        let mut times = Vec::new();
        let mut results = Vec::new();
        for search in [Search::Tree, Search::Brute] {
            let options = Options {
                search,
                ..Options::default()
            };
            let t0 = Instant::now();
            results.push(knn_graph(&points, k, &options).unwrap());
            times.push(t0.elapsed().as_secs_f64());
        }
        assert_eq!(
            results[0], results[1],
            "tree and brute force differ at D = {d}"
        );
        println!(
            "| {d} | {:.2} | {:.2} | {:.2} |",
            times[0],
            times[1],
            times[1] / times[0]
        );
    }
}

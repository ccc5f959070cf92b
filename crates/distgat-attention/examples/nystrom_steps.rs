//! Times each [`NystromPlan`] step on random data, median of `R` runs:
//! `cargo run --release -p distgat-attention --example nystrom_steps -- N M R`
//! (E = 64, 4 heads, 6 pinv iterations, all threads).
use distgat_attention::global::{Blocks, NystromPlan};
use distgat_attention::Execution;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments: N M R (integers)"))
        .collect();
    let n = args.first().copied().unwrap_or(100_000);
    let m = args.get(1).copied().unwrap_or(64);
    let runs = args.get(2).copied().unwrap_or(5).max(1);
    let (heads, d) = (4, 16);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let qkv: Vec<f32> = (0..n * 3 * heads * d)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    let plan = NystromPlan {
        n,
        heads,
        d,
        m,
        pinv_iterations: 6,
        blocks: Blocks::default(),
    };
    let exec = Execution::Parallel;
    let names = [
        "landmark_sums",
        "landmarks",
        "a3_max",
        "a3_sums",
        "weights",
        "output",
        "total",
    ];
    let mut times = vec![Vec::new(); names.len()];
    let mut check = 0f32;
    for _ in 0..runs {
        let mut t = Instant::now();
        let mut lap = |i: usize, times: &mut Vec<Vec<f64>>| {
            times[i].push(t.elapsed().as_secs_f64() * 1e3);
            t = Instant::now();
        };
        let start = Instant::now();
        let sums = plan.landmark_sums(&qkv, None, exec);
        lap(0, &mut times);
        let lm = plan.landmarks(&sums);
        lap(1, &mut times);
        let mut max = plan.a3_max(&lm, &qkv, exec);
        plan.include_padding_max(&mut max);
        lap(2, &mut times);
        let a3 = plan.a3_sums(&lm, &max, &qkv, exec);
        lap(3, &mut times);
        let w = plan.weights(&lm, &max, &a3);
        lap(4, &mut times);
        let out = plan.output(&lm, &w, &qkv, exec);
        lap(5, &mut times);
        times[6].push(start.elapsed().as_secs_f64() * 1e3);
        check = out[0];
    }
    print!("n={n} m={m} runs={runs} out[0]={check}:");
    for (name, t) in names.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        print!(" {name}={:.1}ms", t[t.len() / 2]);
    }
    println!();
}

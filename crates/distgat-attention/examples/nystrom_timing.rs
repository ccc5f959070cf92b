//! Times `nystrom_attention` on random data: `cargo run --release -p distgat-attention
//! --example nystrom_timing -- N M` (E = 64, 4 heads, 6 pinv iterations, all threads).
use distgat_attention::global::{nystrom_attention, Blocks};
use distgat_attention::Execution;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (n, m) = (
        args.first().copied().unwrap_or(100_000),
        args.get(1).copied().unwrap_or(64),
    );
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
    for _ in 0..3 {
        let t = Instant::now();
        let out = nystrom_attention(
            &qkv,
            n,
            heads,
            d,
            m,
            6,
            Blocks::default(),
            Execution::Parallel,
        );
        println!(
            "n={n} m={m}: {:.1} ms (out[0]={})",
            t.elapsed().as_secs_f64() * 1e3,
            out[0]
        );
    }
}

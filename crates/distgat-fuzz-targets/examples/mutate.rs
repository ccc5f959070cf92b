//! A stable-toolchain fallback to cargo-fuzz (not coverage-guided): mutates the corpus of
//! each target (bit flips, byte sets, interesting numbers, truncation, splices) for a given
//! number of seconds and stops at the first panic, writing the input to
//! `fuzz/artifacts/<target>/mutate-crash`.
//! `cargo run --release -p distgat-fuzz-targets --example mutate -- <seconds> [target...]`

use std::path::Path;
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"0",
    b"-1",
    b"18446744073709551615",
    b"9223372036854775808",
    b"4294967296",
    b"1000000000000",
    b"nan",
    b"inf",
    b"1e308",
    b",",
    b" ",
    b"\n",
    b"%",
    b"\xff",
    b"{}",
    b"[]",
    b"\"",
    b"True",
    b"(",
    b")",
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = rng.next() as u8;
            }
            2 => {
                let s = INTERESTING[rng.below(INTERESTING.len())];
                let i = rng.below(len + 1);
                d.splice(i..i, s.iter().copied());
            }
            3 if len > 0 => d.truncate(rng.below(len)),
            4 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(8).min(len - i);
                d.drain(i..i + n);
            }
            5 if !other.is_empty() => {
                let i = rng.below(len + 1);
                let j = rng.below(other.len());
                d.truncate(i);
                d.extend_from_slice(&other[j..]);
            }
            _ if len >= 8 => {
                let i = rng.below(len - 7);
                d[i..i + 8].copy_from_slice(&rng.next().to_le_bytes());
            }
            _ => d.push(rng.next() as u8),
        }
    }
    d
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let names: Vec<String> = args.collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    std::panic::set_hook(Box::new(|_| {}));
    for (name, target) in distgat_fuzz_targets::TARGETS {
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        let seeds: Vec<Vec<u8>> = std::fs::read_dir(root.join("corpus").join(name))
            .expect("a corpus")
            .map(|e| std::fs::read(e.expect("an entry").path()).expect("a file"))
            .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let (start, mut execs) = (Instant::now(), 0u64);
        while start.elapsed() < Duration::from_secs(secs) {
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed, other);
            execs += 1;
            if std::panic::catch_unwind(|| target(&input)).is_err() {
                let dir = root.join("artifacts").join(name);
                std::fs::create_dir_all(&dir).expect("artifacts dir");
                std::fs::write(dir.join("mutate-crash"), &input).expect("crash file");
                println!(
                    "{name}: PANIC after {execs} executions, input in {}",
                    dir.display()
                );
                break;
            }
        }
        println!(
            "{name}: {execs} executions in {:.0} s",
            start.elapsed().as_secs_f64()
        );
    }
}

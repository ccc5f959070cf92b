//! Every file of `fuzz/corpus/<target>/` through its target: the fuzz corpora (seeds,
//! inputs the fuzzer kept, and every crash found, after its fix) as an ordinary test on
//! the stable toolchain. A panic here is a regression of a parser.

use std::path::Path;

use distgat_fuzz_targets::TARGETS;

#[test]
fn every_corpus_file_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut total = 0;
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target has a corpus)", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: empty corpus", dir.display());
        for file in &files {
            let data = std::fs::read(file).expect("a corpus file");
            let run = std::panic::catch_unwind(|| target(&data));
            assert!(run.is_ok(), "{name}: {} panicked", file.display());
        }
        total += files.len();
    }
    eprintln!(
        "replayed {total} corpus files over {} targets",
        TARGETS.len()
    );
}

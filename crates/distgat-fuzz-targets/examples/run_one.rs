//! Runs one target on files: `cargo run -p distgat-fuzz-targets --example run_one --
//! <target> <file>...` (a crash reproduced on stable, without cargo-fuzz).

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("usage: run_one <target> <file>...");
    let target = distgat_fuzz_targets::target(&name).expect("a target name");
    for file in args {
        eprintln!("{name}: {file}");
        target(&std::fs::read(&file).expect("an input file"));
    }
    eprintln!("ok");
}

//! Black-box tests of `distgat partition` and `distgat partition-report` on bad input.
//!
//! Every test copies Cora's edge index into a temporary directory (or writes a tiny graph
//! there), runs the binary, and checks either a valid result or a clean failure: non-zero
//! exit, an `error:` line that names the offending file, flag or directory and says what is
//! wrong, no panic, no `*.partial` (or set-aside `.old-*`) entry next to the output, and an
//! existing partition directory left byte-for-byte as it was.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use npyz::WriterBuilder;
use safetensors::SafeTensors;
use serde_json::Value;

const CORA_EDGES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/cora/edges.npy");
/// Cora's node count.
const N: usize = 2708;

/// A temporary directory holding `cora.npy`; partitions go to `parts/` unless a test says
/// otherwise.
struct Case {
    dir: tempfile::TempDir,
    graph: PathBuf,
    out: PathBuf,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let graph = dir.path().join("cora.npy");
        fs::copy(CORA_EDGES, &graph).unwrap_or_else(|e| panic!("copying {CORA_EDGES}: {e}"));
        Case {
            out: dir.path().join("parts"),
            graph,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `distgat partition --graph GRAPH --out OUT --parts K`, plus whatever the test adds.
    fn partition(&self, parts: usize) -> Run {
        Run::new("partition")
            .arg("--graph")
            .arg(&self.graph)
            .arg("--out")
            .arg(&self.out)
            .arg("--parts")
            .arg(parts.to_string())
    }

    /// Partitions Cora into `parts` parts at `self.out` (must succeed).
    fn make_partition(&self, parts: usize) {
        self.partition(parts).expect_success();
        assert!(self.out.join("manifest.json").is_file());
    }

    fn shard(&self, part: u32) -> PathBuf {
        self.out.join(format!("part-{part:05}.safetensors"))
    }
}

/// One invocation of the binary.
struct Run {
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
}

impl Run {
    fn new(subcommand: &str) -> Self {
        Run {
            args: vec![subcommand.into()],
            cwd: None,
        }
    }

    fn report(dir: &Path) -> Self {
        Run::new("partition-report").arg(dir)
    }

    fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    fn current_dir(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    fn output(&self) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_distgat"));
        command.args(&self.args).env_remove("RUST_LOG");
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        command.output().expect("running distgat")
    }

    /// Runs and checks success; returns stdout.
    #[track_caller]
    fn expect_success(&self) -> String {
        let output = self.output();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "distgat {:?} failed:\n{stderr}",
            self.args
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        String::from_utf8(output.stdout).expect("utf-8 stdout")
    }

    /// Runs and checks a clean failure whose stderr names `culprit` and contains every
    /// phrase of `problem`, leaving no temporary entry in `watch` (the output's parent).
    /// Returns stderr.
    #[track_caller]
    fn expect_error(&self, culprit: &str, problem: &[&str], watch: &Path) -> String {
        let output = self.output();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success(),
            "distgat {:?} succeeded on bad input; stderr:\n{stderr}",
            self.args
        );
        assert!(
            stderr.contains("error:"),
            "no 'error:' in stderr:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "distgat panicked:\n{stderr}");
        assert!(
            stderr.contains(culprit),
            "stderr does not name {culprit:?}:\n{stderr}"
        );
        for phrase in problem {
            assert!(
                stderr.contains(phrase),
                "stderr lacks {phrase:?}:\n{stderr}"
            );
        }
        assert_no_leftovers(watch);
        stderr
    }
}

/// No `*.partial` temporary or `.NAME.old-PID` set-aside directory in `dir`.
#[track_caller]
fn assert_no_leftovers(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    for entry in fs::read_dir(dir).expect("listing dir") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            !name.ends_with(".partial") && !name.contains(".old-"),
            "temporary entry {name:?} left in {}",
            dir.display()
        );
    }
}

/// Every file of a (flat) directory with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("listing dir")
        .map(|entry| {
            let entry = entry.expect("dir entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(entry.file_type().unwrap().is_file(), "{name} is not a file");
            (name, fs::read(entry.path()).expect("reading file"))
        })
        .collect()
}

#[track_caller]
fn assert_unchanged(dir: &Path, before: &BTreeMap<String, Vec<u8>>) {
    let after = snapshot(dir);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "files of {} changed",
        dir.display()
    );
    for (name, bytes) in before {
        assert!(after[name] == *bytes, "{name} in {} changed", dir.display());
    }
}

fn write_npy<T>(path: &Path, shape: &[u64], data: &[T])
where
    T: npyz::Serialize + npyz::AutoSerialize + Copy,
{
    let mut file = std::io::BufWriter::new(fs::File::create(path).expect("create npy"));
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut file)
        .begin_nd()
        .expect("npy header");
    writer.extend(data.iter().copied()).expect("npy body");
    writer.finish().expect("npy finish");
    file.flush().expect("npy flush");
}

/// Shape, dtype descriptor and values (as i64) of an integer `.npy`.
fn read_int_npy(path: &Path) -> (Vec<u64>, String, Vec<i64>) {
    let bytes = fs::read(path).expect("read npy");
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    let shape = npy.shape().to_vec();
    let descr = npy.dtype().descr();
    let values = match descr.as_str() {
        "'<i8'" => npy.into_vec::<i64>().expect("npy body"),
        "'<i4'" => npy
            .into_vec::<i32>()
            .expect("npy body")
            .into_iter()
            .map(i64::from)
            .collect(),
        other => panic!("{}: unexpected dtype {other}", path.display()),
    };
    (shape, descr, values)
}

fn read_manifest(dir: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).expect("manifest"))
        .expect("manifest is JSON")
}

/// A shard's metadata and tensors (name, dtype, shape, bytes), independent of the order in
/// which the file lists them.
type ShardContent = (
    BTreeMap<String, String>,
    BTreeMap<String, (String, Vec<usize>, Vec<u8>)>,
);

fn shard_content(bytes: &[u8]) -> ShardContent {
    let (_, meta) = SafeTensors::read_metadata(bytes).expect("shard header");
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let tensors = SafeTensors::deserialize(bytes)
        .expect("valid shard")
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let value = (
                format!("{:?}", view.dtype()),
                view.shape().to_vec(),
                view.data().to_vec(),
            );
            (name, value)
        })
        .collect();
    (metadata, tensors)
}

fn without_timing_and_shard_checksums(mut manifest: Value) -> Value {
    manifest.as_object_mut().unwrap().remove("report");
    for shard in manifest["shards"].as_array_mut().unwrap() {
        shard.as_object_mut().unwrap().remove("blake3");
    }
    manifest
}

/// A valid assignment of Cora's nodes to 4 parts: node v goes to part v % 4.
fn modulo_assignment() -> Vec<i64> {
    (0..N as i64).map(|v| v % 4).collect()
}

#[test]
fn valid_run_and_report() {
    let case = Case::new();
    let a64 = case.path("a64.npy");
    let stdout = case
        .partition(4)
        .arg("--assignment-out")
        .arg(&a64)
        .expect_success();
    assert!(stdout.contains("into 4 parts"), "{stdout}");
    assert!(stdout.contains("edge cut"), "{stdout}");
    let names: Vec<String> = snapshot(&case.out).into_keys().collect();
    assert_eq!(
        names,
        [
            "assignment.npy",
            "manifest.json",
            "part-00000.safetensors",
            "part-00001.safetensors",
            "part-00002.safetensors",
            "part-00003.safetensors",
        ]
    );
    assert_no_leftovers(case.dir.path());

    let report = Run::report(&case.out).expect_success();
    assert!(report.contains("into 4 parts"), "{report}");
    let json = Run::report(&case.out).arg("--json").expect_success();
    let json: Value = serde_json::from_str(json.trim()).expect("--json prints one JSON object");
    assert_eq!(json["stats"]["parts"], 4, "{json}");
    assert!(json["stats"]["edge_cut"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(json["stats"]["num_nodes"], N, "{json}");

    let (shape, descr, dir_values) = read_int_npy(&case.out.join("assignment.npy"));
    assert_eq!((shape, descr.as_str()), (vec![N as u64], "'<i4'"));
    assert!(dir_values.iter().all(|&p| (0..4).contains(&p)));
    let (shape, descr, values) = read_int_npy(&a64);
    assert_eq!((shape, descr.as_str()), (vec![N as u64], "'<i8'"));
    assert_eq!(values, dir_values);

    // The same partition again with an int32 assignment: idempotent, same values.
    let a32 = case.path("a32.npy");
    case.partition(4)
        .arg("--assignment-out")
        .arg(&a32)
        .arg("--assignment-dtype")
        .arg("int32")
        .expect_success();
    let (shape, descr, values) = read_int_npy(&a32);
    assert_eq!((shape, descr.as_str()), (vec![N as u64], "'<i4'"));
    assert_eq!(values, dir_values);
}

#[test]
fn zero_parts() {
    let case = Case::new();
    case.partition(0).expect_error(
        "--parts",
        &["0 parts", "2708 nodes", "1..=2708"],
        case.dir.path(),
    );
    assert!(!case.out.exists());
}

#[test]
fn more_parts_than_nodes() {
    let case = Case::new();
    case.partition(3000).expect_error(
        "--parts",
        &["3000 parts", "2708 nodes", "1..=2708"],
        case.dir.path(),
    );
    assert!(!case.out.exists());
}

#[test]
fn assignment_file_wrong_length() {
    let case = Case::new();
    let file = case.path("short.npy");
    write_npy(&file, &[100], &vec![0i64; 100]);
    case.partition(4)
        .arg("--method")
        .arg(format!("file:{}", file.display()))
        .expect_error("short.npy", &["shape [2708]", "[100]"], case.dir.path());
    assert!(!case.out.exists());
}

#[test]
fn assignment_file_float_dtype() {
    let case = Case::new();
    let file = case.path("float.npy");
    write_npy(&file, &[N as u64], &vec![1.0f32; N]);
    case.partition(4)
        .arg("--method")
        .arg(format!("file:{}", file.display()))
        .expect_error("float.npy", &["float32", "int64 or int32"], case.dir.path());
    assert!(!case.out.exists());
}

#[test]
fn assignment_file_value_equal_to_parts() {
    let case = Case::new();
    let file = case.path("oor.npy");
    let mut values = modulo_assignment();
    values[17] = 4;
    write_npy(&file, &[N as u64], &values);
    case.partition(4)
        .arg("--method")
        .arg(format!("file:{}", file.display()))
        .expect_error(
            "oor.npy",
            &["node 17", "part 4", "outside 0..4"],
            case.dir.path(),
        );
    assert!(!case.out.exists());
}

#[test]
fn assignment_file_negative_value() {
    let case = Case::new();
    let file = case.path("neg.npy");
    let mut values: Vec<i32> = modulo_assignment().iter().map(|&p| p as i32).collect();
    values[5] = -1;
    write_npy(&file, &[N as u64], &values);
    case.partition(4)
        .arg("--method")
        .arg(format!("file:{}", file.display()))
        .expect_error(
            "neg.npy",
            &["node 5", "part -1", "outside 0..4"],
            case.dir.path(),
        );
    assert!(!case.out.exists());
}

#[test]
fn assignment_file_missing() {
    let case = Case::new();
    case.partition(4)
        .arg("--method")
        .arg(format!("file:{}", case.path("no_such_parts.npy").display()))
        .expect_error("no_such_parts.npy", &["No such file"], case.dir.path());
    assert!(!case.out.exists());
}

#[test]
fn assignment_file_is_reproduced() {
    let case = Case::new();
    let file = case.path("parts.npy");
    let values = modulo_assignment();
    write_npy(&file, &[N as u64], &values);
    let a = case.path("a.npy");
    case.partition(4)
        .arg("--method")
        .arg(format!("file:{}", file.display()))
        .arg("--assignment-out")
        .arg(&a)
        .expect_success();
    assert_eq!(read_int_npy(&a).2, values);
    assert_eq!(read_int_npy(&case.out.join("assignment.npy")).2, values);
    assert_eq!(read_manifest(&case.out)["method"]["name"], "file");
    Run::report(&case.out).expect_success();
}

#[test]
fn unknown_method_name() {
    let case = Case::new();
    case.partition(4)
        .arg("--method")
        .arg("spectral")
        .expect_error("--method", &["'spectral'", "metis"], case.dir.path());
    assert!(!case.out.exists());
}

#[test]
fn imbalance_below_one() {
    let case = Case::new();
    case.partition(4)
        .arg("--imbalance")
        .arg("0.5")
        .expect_error(
            "--imbalance",
            &["0.5", "between 1.0 and 10.0"],
            case.dir.path(),
        );
    assert!(!case.out.exists());
}

#[test]
fn zero_trials() {
    let case = Case::new();
    case.partition(4).arg("--trials").arg("0").expect_error(
        "--trials",
        &["expected 1..=100"],
        case.dir.path(),
    );
    assert!(!case.out.exists());
}

#[test]
fn report_on_corrupted_shard() {
    let case = Case::new();
    case.make_partition(4);
    let shard = case.shard(1);
    let mut bytes = fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    fs::write(&shard, bytes).unwrap();
    Run::report(&case.out).expect_error(
        "part-00001.safetensors",
        &["checksum", "corrupted"],
        case.dir.path(),
    );
    // --json verifies as well.
    Run::report(&case.out).arg("--json").expect_error(
        "part-00001.safetensors",
        &["checksum"],
        case.dir.path(),
    );
}

#[test]
fn report_on_truncated_shard() {
    let case = Case::new();
    case.make_partition(4);
    let shard = case.shard(1);
    let bytes = fs::read(&shard).unwrap();
    let half = bytes.len() / 2;
    fs::write(&shard, &bytes[..half]).unwrap();
    Run::report(&case.out).expect_error(
        "part-00001.safetensors",
        &[
            "truncated",
            &format!("{half} bytes"),
            &format!("says {}", bytes.len()),
        ],
        case.dir.path(),
    );
}

#[test]
fn report_on_deleted_shard() {
    let case = Case::new();
    case.make_partition(4);
    fs::remove_file(case.shard(2)).unwrap();
    Run::report(&case.out).expect_error(
        "part-00002.safetensors",
        &["No such file"],
        case.dir.path(),
    );
}

/// A 12-node undirected ring as a text edge list.
fn write_ring(path: &Path) {
    let mut text = String::from("# ring\n");
    for v in 0..12 {
        let w = (v + 1) % 12;
        text += &format!("{v} {w}\n{w} {v}\n");
    }
    fs::write(path, text).unwrap();
}

#[test]
fn report_on_shard_of_another_graph() {
    let case = Case::new();
    case.make_partition(4);
    let ring = case.path("ring.txt");
    write_ring(&ring);
    let other = case.path("ring_parts");
    Run::new("partition")
        .arg("--graph")
        .arg(&ring)
        .arg("--parts")
        .arg("4")
        .arg("--out")
        .arg(&other)
        .expect_success();
    fs::copy(other.join("part-00000.safetensors"), case.shard(0)).unwrap();
    let stderr = Run::report(&case.out).expect_error(
        "part-00000.safetensors",
        &["the manifest says"],
        case.dir.path(),
    );
    assert!(
        stderr.contains("checksum") || stderr.contains("truncated or replaced"),
        "{stderr}"
    );
}

#[test]
fn report_on_shard_of_another_graph_with_matching_manifest_entry() {
    // Someone also "fixed" the manifest's size and checksum for the foreign shard: the
    // shard's own graph fingerprint still gives it away.
    let case = Case::new();
    case.make_partition(4);
    let ring = case.path("ring.txt");
    write_ring(&ring);
    let other = case.path("ring_parts");
    Run::new("partition")
        .arg("--graph")
        .arg(&ring)
        .arg("--parts")
        .arg("4")
        .arg("--out")
        .arg(&other)
        .expect_success();
    fs::copy(other.join("part-00000.safetensors"), case.shard(0)).unwrap();
    let theirs = read_manifest(&other);
    let mut ours = read_manifest(&case.out);
    for key in ["bytes", "blake3"] {
        ours["shards"][0][key] = theirs["shards"][0][key].clone();
    }
    fs::write(
        case.out.join("manifest.json"),
        serde_json::to_string_pretty(&ours).unwrap(),
    )
    .unwrap();
    Run::report(&case.out).expect_error(
        "part-00000.safetensors",
        &["another graph"],
        case.dir.path(),
    );
}

#[test]
fn report_on_other_manifest_format() {
    let case = Case::new();
    case.make_partition(4);
    let mut manifest = read_manifest(&case.out);
    manifest["format"] = "distgat-partition-v0".into();
    fs::write(
        case.out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    Run::report(&case.out).expect_error(
        "manifest.json",
        &["format", "distgat-partition-v0", "distgat-partition-v1"],
        case.dir.path(),
    );
}

#[test]
fn report_on_manifest_that_is_not_json() {
    let case = Case::new();
    case.make_partition(4);
    fs::write(
        case.out.join("manifest.json"),
        "format = distgat-partition-v1\n",
    )
    .unwrap();
    Run::report(&case.out).expect_error("manifest.json", &["not valid JSON"], case.dir.path());
}

#[test]
fn report_on_missing_directory() {
    let case = Case::new();
    Run::report(&case.path("no_such_partition")).expect_error(
        "no_such_partition",
        &["manifest.json", "No such file"],
        case.dir.path(),
    );
}

#[test]
fn out_holds_a_different_partition() {
    let case = Case::new();
    case.make_partition(4);
    let before = snapshot(&case.out);
    case.partition(2).expect_error(
        &case.out.display().to_string(),
        &["different partition", "--force"],
        case.dir.path(),
    );
    assert_unchanged(&case.out, &before);
    // Other METIS options are a different partition too.
    case.partition(4).arg("--seed").arg("7").expect_error(
        &case.out.display().to_string(),
        &["different partition", "--force"],
        case.dir.path(),
    );
    assert_unchanged(&case.out, &before);

    case.partition(2).arg("--force").expect_success();
    assert_no_leftovers(case.dir.path());
    assert_eq!(read_manifest(&case.out)["parts"], 2);
    let names: Vec<String> = snapshot(&case.out).into_keys().collect();
    assert_eq!(
        names,
        [
            "assignment.npy",
            "manifest.json",
            "part-00000.safetensors",
            "part-00001.safetensors",
        ]
    );
    Run::report(&case.out).expect_success();
}

#[test]
fn identical_partition_is_idempotent() {
    let case = Case::new();
    case.make_partition(4);
    let before = snapshot(&case.out);
    case.partition(4).expect_success();
    assert_no_leftovers(case.dir.path());
    let after = snapshot(&case.out);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    // METIS is deterministic: the same assignment, the same shard contents and the same
    // manifest apart from its timing and the shards' checksums (see the ignored
    // `rerun_gives_byte_identical_shards`).
    assert!(
        after["assignment.npy"] == before["assignment.npy"],
        "assignment.npy differs after a re-run"
    );
    for (name, bytes) in &before {
        if name.ends_with(".safetensors") {
            assert_eq!(
                shard_content(&after[name]),
                shard_content(bytes),
                "{name} differs after a re-run"
            );
        }
    }
    let (old, new) = (
        serde_json::from_slice::<Value>(&before["manifest.json"]).unwrap(),
        read_manifest(&case.out),
    );
    assert_eq!(
        without_timing_and_shard_checksums(old),
        without_timing_and_shard_checksums(new)
    );
    Run::report(&case.out).expect_success();
}

#[test]
fn out_in_missing_parent_directory() {
    let mut case = Case::new();
    case.out = case.path("no_such_parent/parts");
    case.partition(4).expect_error(
        "no_such_parent",
        &["parent directory", "does not exist"],
        case.dir.path(),
    );
    assert!(!case.path("no_such_parent").exists());
}

#[test]
fn out_is_a_regular_file() {
    let mut case = Case::new();
    case.out = case.path("parts.txt");
    fs::write(&case.out, "keep me\n").unwrap();
    case.partition(4)
        .expect_error("parts.txt", &["not a directory"], case.dir.path());
    assert_eq!(fs::read_to_string(&case.out).unwrap(), "keep me\n");
    // --force does not replace a file either.
    case.partition(4).arg("--force").expect_error(
        "parts.txt",
        &["not a directory"],
        case.dir.path(),
    );
    assert_eq!(fs::read_to_string(&case.out).unwrap(), "keep me\n");
}

#[test]
fn out_is_a_non_empty_directory_without_manifest() {
    let case = Case::new();
    fs::create_dir(&case.out).unwrap();
    fs::write(case.out.join("notes.txt"), "precious\n").unwrap();
    let before = snapshot(&case.out);
    case.partition(4).expect_error(
        &case.out.display().to_string(),
        &["not empty", "no partition manifest"],
        case.dir.path(),
    );
    assert_unchanged(&case.out, &before);
    // --force replaces partition directories only: this one is left alone.
    case.partition(4).arg("--force").expect_error(
        &case.out.display().to_string(),
        &["no partition manifest", "even with --force"],
        case.dir.path(),
    );
    assert_unchanged(&case.out, &before);
}

#[test]
fn out_is_an_empty_directory() {
    let case = Case::new();
    fs::create_dir(&case.out).unwrap();
    case.make_partition(4);
    assert_no_leftovers(case.dir.path());
}

#[test]
fn assignment_out_in_missing_directory() {
    let case = Case::new();
    case.partition(4)
        .arg("--assignment-out")
        .arg(case.path("no_such_dir/a.npy"))
        .expect_error(
            "--assignment-out",
            &["no_such_dir", "does not exist"],
            case.dir.path(),
        );
    assert!(
        !case.out.exists(),
        "the partition was written before --assignment-out was refused"
    );
}

#[test]
fn features_with_too_few_rows() {
    let case = Case::new();
    let x = case.path("x100.npy");
    write_npy(&x, &[100, 3], &vec![0.5f32; 300]);
    case.partition(4).arg("--features").arg(&x).expect_error(
        "cora.npy",
        &["beyond the node count 100", "rows of"],
        case.dir.path(),
    );
    assert!(!case.out.exists());
}

// Regression tests for bugs these tests found (now fixed).

#[test]
fn features_with_too_few_rows_names_the_features_file() {
    let case = Case::new();
    let x = case.path("x100.npy");
    write_npy(&x, &[100, 3], &vec![0.5f32; 300]);
    case.partition(4).arg("--features").arg(&x).expect_error(
        "x100.npy",
        &["beyond the node count 100"],
        case.dir.path(),
    );
}

#[test]
fn assignment_out_is_a_directory() {
    let case = Case::new();
    let adir = case.path("adir");
    fs::create_dir(&adir).unwrap();
    case.partition(4)
        .arg("--assignment-out")
        .arg(&adir)
        .expect_error("--assignment-out", &["adir"], case.dir.path());
    assert!(
        !case.out.exists(),
        "the partition was written before --assignment-out was refused"
    );
}

#[test]
fn force_into_current_directory_leaves_no_partial() {
    let case = Case::new();
    let work = case.path("work");
    fs::create_dir(&work).unwrap();
    fs::write(work.join("notes.txt"), "precious\n").unwrap();
    Run::new("partition")
        .arg("--graph")
        .arg(&case.graph)
        .arg("--parts")
        .arg("4")
        .arg("--out")
        .arg(".")
        .arg("--force")
        .current_dir(&work)
        .expect_error("error:", &[], &work);
    assert_eq!(
        fs::read_to_string(work.join("notes.txt")).unwrap(),
        "precious\n"
    );
}

#[test]
fn rerun_gives_byte_identical_shards() {
    let case = Case::new();
    let first = case.path("first");
    let second = case.path("second");
    for out in [&first, &second] {
        Run::new("partition")
            .arg("--graph")
            .arg(&case.graph)
            .arg("--parts")
            .arg("4")
            .arg("--out")
            .arg(out)
            .expect_success();
    }
    let (a, b) = (snapshot(&first), snapshot(&second));
    for (name, bytes) in &a {
        if name != "manifest.json" {
            assert!(
                b[name] == *bytes,
                "{name} differs between two identical runs"
            );
        }
    }
}

#[test]
fn stream_method_partitions_and_checks_imbalance() {
    let case = Case::new();
    let stdout = case
        .partition(4)
        .arg("--method")
        .arg("stream")
        .arg("--json")
        .expect_success();
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["method"]["name"], "stream", "{stdout}");
    assert!(read_manifest(&case.out)["method"]["imbalance"].is_number());
    let case = Case::new();
    case.partition(4)
        .arg("--method")
        .arg("stream")
        .arg("--imbalance")
        .arg("0.5")
        .expect_error(
            "--imbalance",
            &["0.5", "between 1.0 and 10.0"],
            case.dir.path(),
        );
    assert!(!case.out.exists());
}

//! Writes the protobuf seeds of `fuzz/corpus/proto_*` (a selector byte, for
//! `proto_worker` a dimension byte, then one encoded message). Run once by hand:
//! `cargo test -p distgat-fuzz-targets --test seeds -- --ignored`.

use std::path::Path;

use distgat_proto::v1;
use prost::Message;

fn put(target: &str, name: &str, prefix: &[u8], m: &impl Message) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = prefix.to_vec();
    bytes.extend(m.encode_to_vec());
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_proto_seeds() {
    let c = "proto_coordinator";
    let knn = v1::NeighbourSpec {
        knn: Some(8),
        radius: None,
        max_neighbours: None,
        self_loops: true,
        metric: "cosine".into(),
    };
    put(
        c,
        "register-graph",
        &[0],
        &v1::RegisterGraphRequest {
            name: "cora".into(),
            graph: "cora/edges.npy".into(),
            graph_format: "npy".into(),
            features: "cora/x.npy".into(),
            ..Default::default()
        },
    );
    put(
        c,
        "register-graph-knn",
        &[0],
        &v1::RegisterGraphRequest {
            name: "pts".into(),
            features: "x.npy".into(),
            neighbourhood: Some(knn.clone()),
            parts: 2,
            ..Default::default()
        },
    );
    put(
        c,
        "upload-header",
        &[1],
        &v1::UploadGraphChunk {
            body: Some(v1::upload_graph_chunk::Body::Header(v1::UploadHeader {
                name: "g".into(),
                graph_format: "edgelist".into(),
                graph_bytes: 8,
                features_bytes: 128,
                edge_features_bytes: 0,
            })),
        },
    );
    put(
        c,
        "upload-data",
        &[1],
        &v1::UploadGraphChunk {
            body: Some(v1::upload_graph_chunk::Body::GraphData(
                b"0 1\n1 2\n".to_vec(),
            )),
        },
    );
    put(
        c,
        "submit-job",
        &[2],
        &v1::SubmitJobRequest {
            graph_id: "g-1".into(),
            model: "model.json".into(),
            attention: true,
            ..Default::default()
        },
    );
    put(
        c,
        "fetch-output-range",
        &[3],
        &v1::FetchOutputRequest {
            job_id: "j-1".into(),
            selection: Some(v1::fetch_output_request::Selection::Range(v1::NodeRange {
                start: 0,
                end: 10,
            })),
        },
    );
    put(
        c,
        "fetch-output-nodes",
        &[3],
        &v1::FetchOutputRequest {
            job_id: "j-1".into(),
            selection: Some(v1::fetch_output_request::Selection::Nodes(v1::NodeList {
                ids: vec![3, 1, 4],
            })),
        },
    );
    put(
        c,
        "fetch-attention",
        &[4],
        &v1::FetchAttentionRequest {
            job_id: "j-1".into(),
            ..Default::default()
        },
    );
    put(
        c,
        "output-rows",
        &[12],
        &v1::OutputChunk {
            job_id: "j-1".into(),
            part: 1,
            body: Some(v1::output_chunk::Body::Rows(v1::OutputRows {
                nodes: vec![0, 5],
                width: 2,
                values: f32s(&[1.0, 2.0, 3.0, 4.0]),
            })),
        },
    );
    put(
        c,
        "output-failure",
        &[12],
        &v1::OutputChunk {
            job_id: "j-1".into(),
            part: 0,
            body: Some(v1::output_chunk::Body::Failure("boom".into())),
        },
    );

    let w = "proto_worker";
    put(
        w,
        "row-chunk",
        &[0, 1],
        &v1::RowChunk {
            job_id: "j-1".into(),
            layer: 1,
            source_part: 2,
            first_row: 0,
            num_rows: 2,
            row_width: 2,
            kind: v1::PayloadKind::Raw as i32,
            payload: f32s(&[1.0, 2.0, 3.0, 4.0]).into(),
            ..Default::default()
        },
    );
    put(
        w,
        "build-header",
        &[1, 1],
        &v1::BuildChunk {
            body: Some(v1::build_chunk::Body::Header(v1::BuildHeader {
                build_id: "b-1".into(),
                part: 0,
                spec: Some(v1::NeighbourSpec {
                    knn: None,
                    radius: Some(0.5),
                    max_neighbours: Some(16),
                    self_loops: false,
                    metric: String::new(),
                }),
                total_points: 100,
                dim: 2,
                own_points: 50,
                boxes: vec![v1::PartBox {
                    part: 0,
                    lo: f32s(&[0.0, 0.0]),
                    hi: f32s(&[1.0, 1.0]),
                }],
                peers: vec![v1::Peer {
                    part: 1,
                    address: "127.0.0.1:1".into(),
                }],
                threads: 1,
                keep: true,
                counts_only: false,
            })),
        },
    );
    put(
        w,
        "build-held",
        &[1, 2],
        &v1::BuildChunk {
            body: Some(v1::build_chunk::Body::Held(v1::HeldPart {
                halo: vec![3, 9],
                halo_owner: vec![1, 1],
                send_peer: vec![1],
                send_count: vec![2],
                send_rows: vec![0, 5],
                edge_base: vec![0, 4, 8],
                last: true,
            })),
        },
    );
    put(
        w,
        "build-points",
        &[1, 1],
        &v1::BuildChunk {
            body: Some(v1::build_chunk::Body::Points(v1::PointChunk {
                ids: vec![0, 7],
                coords: f32s(&[0.0, 1.0, 2.0, 3.0]),
            })),
        },
    );
    put(
        w,
        "fetch-points",
        &[2, 1],
        &v1::FetchPointsRequest {
            build_id: "b-1".into(),
            part: 1,
            lo: f32s(&[0.0, 0.0]),
            hi: f32s(&[1.0, 2.0]),
            reach: 0.25,
        },
    );
    put(
        w,
        "start-job",
        &[3, 0],
        &v1::StartJobRequest {
            job_id: "j-1".into(),
            part: 0,
            ..Default::default()
        },
    );
    put(w, "run-job", &[4, 0], &v1::RunJobRequest::default());
}

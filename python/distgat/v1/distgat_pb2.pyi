from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShardSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARD_SOURCE_UNSPECIFIED: _ClassVar[ShardSource]
    SHARD_SOURCE_STREAM: _ClassVar[ShardSource]
    SHARD_SOURCE_SHARED: _ClassVar[ShardSource]

class PayloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_KIND_UNSPECIFIED: _ClassVar[PayloadKind]
    PAYLOAD_KIND_RAW: _ClassVar[PayloadKind]
    PAYLOAD_KIND_TRANSFORMED: _ClassVar[PayloadKind]
    PAYLOAD_KIND_GATHER: _ClassVar[PayloadKind]
    PAYLOAD_KIND_PARTIAL: _ClassVar[PayloadKind]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_PARTITIONING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
SHARD_SOURCE_UNSPECIFIED: ShardSource
SHARD_SOURCE_STREAM: ShardSource
SHARD_SOURCE_SHARED: ShardSource
PAYLOAD_KIND_UNSPECIFIED: PayloadKind
PAYLOAD_KIND_RAW: PayloadKind
PAYLOAD_KIND_TRANSFORMED: PayloadKind
PAYLOAD_KIND_GATHER: PayloadKind
PAYLOAD_KIND_PARTIAL: PayloadKind
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_PARTITIONING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class RegisterWorkerRequest(_message.Message):
    __slots__ = ("protocol_version", "address")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    address: str
    def __init__(self, protocol_version: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class RegisterWorkerResponse(_message.Message):
    __slots__ = ("worker_id", "heartbeat_interval_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    heartbeat_interval_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id", "running")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    running: _containers.RepeatedCompositeFieldContainer[RunningPart]
    def __init__(self, worker_id: _Optional[str] = ..., running: _Optional[_Iterable[_Union[RunningPart, _Mapping]]] = ...) -> None: ...

class RunningPart(_message.Message):
    __slots__ = ("job_id", "part", "layer", "entries_done", "entries_total")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_DONE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    part: int
    layer: int
    entries_done: int
    entries_total: int
    def __init__(self, job_id: _Optional[str] = ..., part: _Optional[int] = ..., layer: _Optional[int] = ..., entries_done: _Optional[int] = ..., entries_total: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RunJobRequest(_message.Message):
    __slots__ = ("partition_dir", "model", "features", "normalize_rows", "out", "attention_dir", "graph", "graph_format", "threads_per_worker", "edge_features", "shard_source", "build_id", "workers_write_output")
    PARTITION_DIR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_ROWS_FIELD_NUMBER: _ClassVar[int]
    OUT_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_DIR_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FORMAT_FIELD_NUMBER: _ClassVar[int]
    THREADS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    EDGE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    SHARD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    WORKERS_WRITE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    partition_dir: str
    model: str
    features: str
    normalize_rows: bool
    out: str
    attention_dir: str
    graph: str
    graph_format: str
    threads_per_worker: int
    edge_features: str
    shard_source: str
    build_id: str
    workers_write_output: bool
    def __init__(self, partition_dir: _Optional[str] = ..., model: _Optional[str] = ..., features: _Optional[str] = ..., normalize_rows: _Optional[bool] = ..., out: _Optional[str] = ..., attention_dir: _Optional[str] = ..., graph: _Optional[str] = ..., graph_format: _Optional[str] = ..., threads_per_worker: _Optional[int] = ..., edge_features: _Optional[str] = ..., shard_source: _Optional[str] = ..., build_id: _Optional[str] = ..., workers_write_output: _Optional[bool] = ...) -> None: ...

class RunJobResponse(_message.Message):
    __slots__ = ("job_id", "summary_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    summary_json: str
    def __init__(self, job_id: _Optional[str] = ..., summary_json: _Optional[str] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("part", "address")
    PART_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    part: int
    address: str
    def __init__(self, part: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class StartJobRequest(_message.Message):
    __slots__ = ("job_id", "partition_dir", "part", "peers", "model", "features", "normalize_rows", "feature_min", "want_attention", "threads", "edge_features", "shard_source", "partition_manifest", "worker_id", "build_id", "num_nodes", "keep_sent_rows", "out_file", "out_header_len", "out_rows", "out_owned_order")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_DIR_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_MIN_FIELD_NUMBER: _ClassVar[int]
    WANT_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    EDGE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    SHARD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    KEEP_SENT_ROWS_FIELD_NUMBER: _ClassVar[int]
    OUT_FILE_FIELD_NUMBER: _ClassVar[int]
    OUT_HEADER_LEN_FIELD_NUMBER: _ClassVar[int]
    OUT_ROWS_FIELD_NUMBER: _ClassVar[int]
    OUT_OWNED_ORDER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    partition_dir: str
    part: int
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    model: str
    features: str
    normalize_rows: bool
    feature_min: float
    want_attention: bool
    threads: int
    edge_features: str
    shard_source: ShardSource
    partition_manifest: str
    worker_id: str
    build_id: str
    num_nodes: int
    keep_sent_rows: bool
    out_file: str
    out_header_len: int
    out_rows: int
    out_owned_order: bool
    def __init__(self, job_id: _Optional[str] = ..., partition_dir: _Optional[str] = ..., part: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., model: _Optional[str] = ..., features: _Optional[str] = ..., normalize_rows: _Optional[bool] = ..., feature_min: _Optional[float] = ..., want_attention: _Optional[bool] = ..., threads: _Optional[int] = ..., edge_features: _Optional[str] = ..., shard_source: _Optional[_Union[ShardSource, str]] = ..., partition_manifest: _Optional[str] = ..., worker_id: _Optional[str] = ..., build_id: _Optional[str] = ..., num_nodes: _Optional[int] = ..., keep_sent_rows: _Optional[bool] = ..., out_file: _Optional[str] = ..., out_header_len: _Optional[int] = ..., out_rows: _Optional[int] = ..., out_owned_order: _Optional[bool] = ...) -> None: ...

class StartJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RerouteJobRequest(_message.Message):
    __slots__ = ("job_id", "part", "address")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    part: int
    address: str
    def __init__(self, job_id: _Optional[str] = ..., part: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class RerouteJobResponse(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: int
    def __init__(self, chunks: _Optional[int] = ...) -> None: ...

class FetchShardRequest(_message.Message):
    __slots__ = ("job_id", "part", "worker_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    part: int
    worker_id: str
    def __init__(self, job_id: _Optional[str] = ..., part: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class ShardChunk(_message.Message):
    __slots__ = ("offset", "total_bytes", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    total_bytes: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class FetchInputsRequest(_message.Message):
    __slots__ = ("job_id", "part", "worker_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    part: int
    worker_id: str
    def __init__(self, job_id: _Optional[str] = ..., part: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class ModelFileChunk(_message.Message):
    __slots__ = ("name", "offset", "total_bytes", "data", "aliases")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    name: str
    offset: int
    total_bytes: int
    data: bytes
    aliases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., offset: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ..., aliases: _Optional[_Iterable[str]] = ...) -> None: ...

class InputRows(_message.Message):
    __slots__ = ("first_row", "num_rows", "width", "values")
    FIRST_ROW_FIELD_NUMBER: _ClassVar[int]
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    first_row: int
    num_rows: int
    width: int
    values: bytes
    def __init__(self, first_row: _Optional[int] = ..., num_rows: _Optional[int] = ..., width: _Optional[int] = ..., values: _Optional[bytes] = ...) -> None: ...

class InputsDone(_message.Message):
    __slots__ = ("blake3", "feature_rows", "edge_rows")
    BLAKE3_FIELD_NUMBER: _ClassVar[int]
    FEATURE_ROWS_FIELD_NUMBER: _ClassVar[int]
    EDGE_ROWS_FIELD_NUMBER: _ClassVar[int]
    blake3: str
    feature_rows: int
    edge_rows: int
    def __init__(self, blake3: _Optional[str] = ..., feature_rows: _Optional[int] = ..., edge_rows: _Optional[int] = ...) -> None: ...

class InputChunk(_message.Message):
    __slots__ = ("model", "features", "edge_attr", "done")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    EDGE_ATTR_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    model: ModelFileChunk
    features: InputRows
    edge_attr: InputRows
    done: InputsDone
    def __init__(self, model: _Optional[_Union[ModelFileChunk, _Mapping]] = ..., features: _Optional[_Union[InputRows, _Mapping]] = ..., edge_attr: _Optional[_Union[InputRows, _Mapping]] = ..., done: _Optional[_Union[InputsDone, _Mapping]] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeletePartitionRequest(_message.Message):
    __slots__ = ("partition_id",)
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    partition_id: str
    def __init__(self, partition_id: _Optional[str] = ...) -> None: ...

class DeleteGraphRequest(_message.Message):
    __slots__ = ("graph_id",)
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    def __init__(self, graph_id: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("id", "bytes_freed")
    ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    id: str
    bytes_freed: int
    def __init__(self, id: _Optional[str] = ..., bytes_freed: _Optional[int] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RowChunk(_message.Message):
    __slots__ = ("job_id", "layer", "source_part", "first_row", "num_rows", "row_width", "kind", "payload", "step", "nodes", "target_part")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PART_FIELD_NUMBER: _ClassVar[int]
    FIRST_ROW_FIELD_NUMBER: _ClassVar[int]
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    ROW_WIDTH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    TARGET_PART_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    layer: int
    source_part: int
    first_row: int
    num_rows: int
    row_width: int
    kind: PayloadKind
    payload: bytes
    step: int
    nodes: _containers.RepeatedScalarFieldContainer[int]
    target_part: int
    def __init__(self, job_id: _Optional[str] = ..., layer: _Optional[int] = ..., source_part: _Optional[int] = ..., first_row: _Optional[int] = ..., num_rows: _Optional[int] = ..., row_width: _Optional[int] = ..., kind: _Optional[_Union[PayloadKind, str]] = ..., payload: _Optional[bytes] = ..., step: _Optional[int] = ..., nodes: _Optional[_Iterable[int]] = ..., target_part: _Optional[int] = ...) -> None: ...

class SendRowsResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    def __init__(self, rows: _Optional[int] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("job_id", "part", "rows", "attention", "stats", "failure", "progress", "alive", "rows_written")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    ROWS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    part: int
    rows: OutputRows
    attention: AttentionValues
    stats: WorkerStats
    failure: str
    progress: LayerStats
    alive: bool
    rows_written: RowsWritten
    def __init__(self, job_id: _Optional[str] = ..., part: _Optional[int] = ..., rows: _Optional[_Union[OutputRows, _Mapping]] = ..., attention: _Optional[_Union[AttentionValues, _Mapping]] = ..., stats: _Optional[_Union[WorkerStats, _Mapping]] = ..., failure: _Optional[str] = ..., progress: _Optional[_Union[LayerStats, _Mapping]] = ..., alive: _Optional[bool] = ..., rows_written: _Optional[_Union[RowsWritten, _Mapping]] = ...) -> None: ...

class RowsWritten(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, nodes: _Optional[_Iterable[int]] = ...) -> None: ...

class OutputRows(_message.Message):
    __slots__ = ("nodes", "width", "values")
    NODES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedScalarFieldContainer[int]
    width: int
    values: bytes
    def __init__(self, nodes: _Optional[_Iterable[int]] = ..., width: _Optional[int] = ..., values: _Optional[bytes] = ...) -> None: ...

class AttentionValues(_message.Message):
    __slots__ = ("layer", "heads", "edges", "values")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    layer: int
    heads: int
    edges: _containers.RepeatedScalarFieldContainer[int]
    values: bytes
    def __init__(self, layer: _Optional[int] = ..., heads: _Optional[int] = ..., edges: _Optional[_Iterable[int]] = ..., values: _Optional[bytes] = ...) -> None: ...

class LayerStats(_message.Message):
    __slots__ = ("layer", "compute_ms", "wait_ms", "send_ms", "rows_sent", "bytes_sent", "bytes_planned")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    SEND_MS_FIELD_NUMBER: _ClassVar[int]
    ROWS_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_PLANNED_FIELD_NUMBER: _ClassVar[int]
    layer: int
    compute_ms: float
    wait_ms: float
    send_ms: float
    rows_sent: int
    bytes_sent: int
    bytes_planned: int
    def __init__(self, layer: _Optional[int] = ..., compute_ms: _Optional[float] = ..., wait_ms: _Optional[float] = ..., send_ms: _Optional[float] = ..., rows_sent: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., bytes_planned: _Optional[int] = ...) -> None: ...

class WorkerStats(_message.Message):
    __slots__ = ("layers", "shard_cache", "threads")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    SHARD_CACHE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerStats]
    shard_cache: str
    threads: int
    def __init__(self, layers: _Optional[_Iterable[_Union[LayerStats, _Mapping]]] = ..., shard_cache: _Optional[str] = ..., threads: _Optional[int] = ...) -> None: ...

class RegisterGraphRequest(_message.Message):
    __slots__ = ("name", "graph", "graph_format", "features", "edge_features", "neighbourhood", "points", "parts", "threads_per_worker")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FORMAT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    EDGE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURHOOD_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    THREADS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    name: str
    graph: str
    graph_format: str
    features: str
    edge_features: str
    neighbourhood: NeighbourSpec
    points: str
    parts: int
    threads_per_worker: int
    def __init__(self, name: _Optional[str] = ..., graph: _Optional[str] = ..., graph_format: _Optional[str] = ..., features: _Optional[str] = ..., edge_features: _Optional[str] = ..., neighbourhood: _Optional[_Union[NeighbourSpec, _Mapping]] = ..., points: _Optional[str] = ..., parts: _Optional[int] = ..., threads_per_worker: _Optional[int] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("name", "graph_format", "graph_bytes", "features_bytes", "edge_features_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FORMAT_FIELD_NUMBER: _ClassVar[int]
    GRAPH_BYTES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_BYTES_FIELD_NUMBER: _ClassVar[int]
    EDGE_FEATURES_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    graph_format: str
    graph_bytes: int
    features_bytes: int
    edge_features_bytes: int
    def __init__(self, name: _Optional[str] = ..., graph_format: _Optional[str] = ..., graph_bytes: _Optional[int] = ..., features_bytes: _Optional[int] = ..., edge_features_bytes: _Optional[int] = ...) -> None: ...

class UploadGraphChunk(_message.Message):
    __slots__ = ("header", "graph_data", "features_data", "edge_features_data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    GRAPH_DATA_FIELD_NUMBER: _ClassVar[int]
    FEATURES_DATA_FIELD_NUMBER: _ClassVar[int]
    EDGE_FEATURES_DATA_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    graph_data: bytes
    features_data: bytes
    edge_features_data: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., graph_data: _Optional[bytes] = ..., features_data: _Optional[bytes] = ..., edge_features_data: _Optional[bytes] = ...) -> None: ...

class GraphInfo(_message.Message):
    __slots__ = ("graph_id", "name", "nodes", "edges", "feature_width", "source", "edge_feature_width", "neighbourhood", "spatial_parts", "build_summary_json")
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EDGE_FEATURE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURHOOD_FIELD_NUMBER: _ClassVar[int]
    SPATIAL_PARTS_FIELD_NUMBER: _ClassVar[int]
    BUILD_SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    name: str
    nodes: int
    edges: int
    feature_width: int
    source: str
    edge_feature_width: int
    neighbourhood: str
    spatial_parts: int
    build_summary_json: str
    def __init__(self, graph_id: _Optional[str] = ..., name: _Optional[str] = ..., nodes: _Optional[int] = ..., edges: _Optional[int] = ..., feature_width: _Optional[int] = ..., source: _Optional[str] = ..., edge_feature_width: _Optional[int] = ..., neighbourhood: _Optional[str] = ..., spatial_parts: _Optional[int] = ..., build_summary_json: _Optional[str] = ...) -> None: ...

class FetchEdgesRequest(_message.Message):
    __slots__ = ("graph_id",)
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    def __init__(self, graph_id: _Optional[str] = ...) -> None: ...

class EdgeChunk(_message.Message):
    __slots__ = ("total_edges", "offset", "sources", "targets")
    TOTAL_EDGES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    total_edges: int
    offset: int
    sources: _containers.RepeatedScalarFieldContainer[int]
    targets: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, total_edges: _Optional[int] = ..., offset: _Optional[int] = ..., sources: _Optional[_Iterable[int]] = ..., targets: _Optional[_Iterable[int]] = ...) -> None: ...

class ListGraphsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGraphsResponse(_message.Message):
    __slots__ = ("graphs",)
    GRAPHS_FIELD_NUMBER: _ClassVar[int]
    graphs: _containers.RepeatedCompositeFieldContainer[GraphInfo]
    def __init__(self, graphs: _Optional[_Iterable[_Union[GraphInfo, _Mapping]]] = ...) -> None: ...

class CreatePartitionRequest(_message.Message):
    __slots__ = ("graph_id", "parts", "method", "seed")
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    parts: int
    method: str
    seed: int
    def __init__(self, graph_id: _Optional[str] = ..., parts: _Optional[int] = ..., method: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class PartitionInfo(_message.Message):
    __slots__ = ("partition_id", "graph_id", "parts", "method", "edge_cut", "halo_rows", "seconds")
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    EDGE_CUT_FIELD_NUMBER: _ClassVar[int]
    HALO_ROWS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    partition_id: str
    graph_id: str
    parts: int
    method: str
    edge_cut: int
    halo_rows: int
    seconds: float
    def __init__(self, partition_id: _Optional[str] = ..., graph_id: _Optional[str] = ..., parts: _Optional[int] = ..., method: _Optional[str] = ..., edge_cut: _Optional[int] = ..., halo_rows: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class ListPartitionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPartitionsResponse(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionInfo]
    def __init__(self, partitions: _Optional[_Iterable[_Union[PartitionInfo, _Mapping]]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("graph_id", "partition_id", "parts", "method", "model", "normalize_features", "attention", "threads_per_worker", "shard_source")
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    THREADS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    SHARD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    partition_id: str
    parts: int
    method: str
    model: str
    normalize_features: bool
    attention: bool
    threads_per_worker: int
    shard_source: str
    def __init__(self, graph_id: _Optional[str] = ..., partition_id: _Optional[str] = ..., parts: _Optional[int] = ..., method: _Optional[str] = ..., model: _Optional[str] = ..., normalize_features: _Optional[bool] = ..., attention: _Optional[bool] = ..., threads_per_worker: _Optional[int] = ..., shard_source: _Optional[str] = ...) -> None: ...

class PartProgress(_message.Message):
    __slots__ = ("part", "worker_id", "worker_address", "layers_done", "halo_bytes_sent", "layer_entries_done", "layer_entries_total")
    PART_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_DONE_FIELD_NUMBER: _ClassVar[int]
    HALO_BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    LAYER_ENTRIES_DONE_FIELD_NUMBER: _ClassVar[int]
    LAYER_ENTRIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    part: int
    worker_id: str
    worker_address: str
    layers_done: int
    halo_bytes_sent: int
    layer_entries_done: int
    layer_entries_total: int
    def __init__(self, part: _Optional[int] = ..., worker_id: _Optional[str] = ..., worker_address: _Optional[str] = ..., layers_done: _Optional[int] = ..., halo_bytes_sent: _Optional[int] = ..., layer_entries_done: _Optional[int] = ..., layer_entries_total: _Optional[int] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "state", "graph_id", "partition_id", "parts", "layers", "progress", "error", "queue_position", "output_rows", "output_width", "attention", "seconds", "summary_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ROWS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    graph_id: str
    partition_id: str
    parts: int
    layers: int
    progress: _containers.RepeatedCompositeFieldContainer[PartProgress]
    error: str
    queue_position: int
    output_rows: int
    output_width: int
    attention: bool
    seconds: float
    summary_json: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., graph_id: _Optional[str] = ..., partition_id: _Optional[str] = ..., parts: _Optional[int] = ..., layers: _Optional[int] = ..., progress: _Optional[_Iterable[_Union[PartProgress, _Mapping]]] = ..., error: _Optional[str] = ..., queue_position: _Optional[int] = ..., output_rows: _Optional[int] = ..., output_width: _Optional[int] = ..., attention: _Optional[bool] = ..., seconds: _Optional[float] = ..., summary_json: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class NodeRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class NodeList(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class FetchOutputRequest(_message.Message):
    __slots__ = ("job_id", "range", "nodes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    range: NodeRange
    nodes: NodeList
    def __init__(self, job_id: _Optional[str] = ..., range: _Optional[_Union[NodeRange, _Mapping]] = ..., nodes: _Optional[_Union[NodeList, _Mapping]] = ...) -> None: ...

class FetchAttentionRequest(_message.Message):
    __slots__ = ("job_id", "layer", "nodes", "top_k")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    layer: int
    nodes: _containers.RepeatedScalarFieldContainer[int]
    top_k: int
    def __init__(self, job_id: _Optional[str] = ..., layer: _Optional[int] = ..., nodes: _Optional[_Iterable[int]] = ..., top_k: _Optional[int] = ...) -> None: ...

class Neighbour(_message.Message):
    __slots__ = ("source", "edge", "mean_alpha", "alpha")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    MEAN_ALPHA_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    source: int
    edge: int
    mean_alpha: float
    alpha: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, source: _Optional[int] = ..., edge: _Optional[int] = ..., mean_alpha: _Optional[float] = ..., alpha: _Optional[_Iterable[float]] = ...) -> None: ...

class NodeAttention(_message.Message):
    __slots__ = ("node", "in_degree", "top")
    NODE_FIELD_NUMBER: _ClassVar[int]
    IN_DEGREE_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    node: int
    in_degree: int
    top: _containers.RepeatedCompositeFieldContainer[Neighbour]
    def __init__(self, node: _Optional[int] = ..., in_degree: _Optional[int] = ..., top: _Optional[_Iterable[_Union[Neighbour, _Mapping]]] = ...) -> None: ...

class FetchAttentionResponse(_message.Message):
    __slots__ = ("layer", "heads", "nodes")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    layer: int
    heads: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeAttention]
    def __init__(self, layer: _Optional[int] = ..., heads: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeAttention, _Mapping]]] = ...) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("worker_id", "address", "healthy", "last_heartbeat_ms_ago", "job_id", "part")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_MS_AGO_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    address: str
    healthy: bool
    last_heartbeat_ms_ago: int
    job_id: str
    part: int
    def __init__(self, worker_id: _Optional[str] = ..., address: _Optional[str] = ..., healthy: _Optional[bool] = ..., last_heartbeat_ms_ago: _Optional[int] = ..., job_id: _Optional[str] = ..., part: _Optional[int] = ...) -> None: ...

class ClusterStatusResponse(_message.Message):
    __slots__ = ("protocol_version", "workers", "running_job", "queued_jobs")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOB_FIELD_NUMBER: _ClassVar[int]
    QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStatus]
    running_job: str
    queued_jobs: int
    def __init__(self, protocol_version: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[WorkerStatus, _Mapping]]] = ..., running_job: _Optional[str] = ..., queued_jobs: _Optional[int] = ...) -> None: ...

class PushOutputResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NeighbourSpec(_message.Message):
    __slots__ = ("knn", "radius", "max_neighbours", "self_loops", "metric")
    KNN_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    SELF_LOOPS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    knn: int
    radius: float
    max_neighbours: int
    self_loops: bool
    metric: str
    def __init__(self, knn: _Optional[int] = ..., radius: _Optional[float] = ..., max_neighbours: _Optional[int] = ..., self_loops: _Optional[bool] = ..., metric: _Optional[str] = ...) -> None: ...

class BuildNeighboursRequest(_message.Message):
    __slots__ = ("points", "spec", "out", "parts", "threads_per_worker", "assignment_out", "keep_parts")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    OUT_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    THREADS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_OUT_FIELD_NUMBER: _ClassVar[int]
    KEEP_PARTS_FIELD_NUMBER: _ClassVar[int]
    points: str
    spec: NeighbourSpec
    out: str
    parts: int
    threads_per_worker: int
    assignment_out: str
    keep_parts: bool
    def __init__(self, points: _Optional[str] = ..., spec: _Optional[_Union[NeighbourSpec, _Mapping]] = ..., out: _Optional[str] = ..., parts: _Optional[int] = ..., threads_per_worker: _Optional[int] = ..., assignment_out: _Optional[str] = ..., keep_parts: _Optional[bool] = ...) -> None: ...

class BuildNeighboursResponse(_message.Message):
    __slots__ = ("summary_json", "nodes", "edges", "build_id")
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    summary_json: str
    nodes: int
    edges: int
    build_id: str
    def __init__(self, summary_json: _Optional[str] = ..., nodes: _Optional[int] = ..., edges: _Optional[int] = ..., build_id: _Optional[str] = ...) -> None: ...

class PartBox(_message.Message):
    __slots__ = ("part", "lo", "hi")
    PART_FIELD_NUMBER: _ClassVar[int]
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    part: int
    lo: bytes
    hi: bytes
    def __init__(self, part: _Optional[int] = ..., lo: _Optional[bytes] = ..., hi: _Optional[bytes] = ...) -> None: ...

class BuildHeader(_message.Message):
    __slots__ = ("build_id", "part", "spec", "total_points", "dim", "own_points", "boxes", "peers", "threads", "keep", "counts_only")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    OWN_POINTS_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    COUNTS_ONLY_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    part: int
    spec: NeighbourSpec
    total_points: int
    dim: int
    own_points: int
    boxes: _containers.RepeatedCompositeFieldContainer[PartBox]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    threads: int
    keep: bool
    counts_only: bool
    def __init__(self, build_id: _Optional[str] = ..., part: _Optional[int] = ..., spec: _Optional[_Union[NeighbourSpec, _Mapping]] = ..., total_points: _Optional[int] = ..., dim: _Optional[int] = ..., own_points: _Optional[int] = ..., boxes: _Optional[_Iterable[_Union[PartBox, _Mapping]]] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., threads: _Optional[int] = ..., keep: _Optional[bool] = ..., counts_only: _Optional[bool] = ...) -> None: ...

class PointChunk(_message.Message):
    __slots__ = ("ids", "coords")
    IDS_FIELD_NUMBER: _ClassVar[int]
    COORDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    coords: bytes
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., coords: _Optional[bytes] = ...) -> None: ...

class BuildChunk(_message.Message):
    __slots__ = ("header", "points", "held")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    header: BuildHeader
    points: PointChunk
    held: HeldPart
    def __init__(self, header: _Optional[_Union[BuildHeader, _Mapping]] = ..., points: _Optional[_Union[PointChunk, _Mapping]] = ..., held: _Optional[_Union[HeldPart, _Mapping]] = ...) -> None: ...

class HeldPart(_message.Message):
    __slots__ = ("halo", "halo_owner", "send_peer", "send_count", "send_rows", "edge_base", "last")
    HALO_FIELD_NUMBER: _ClassVar[int]
    HALO_OWNER_FIELD_NUMBER: _ClassVar[int]
    SEND_PEER_FIELD_NUMBER: _ClassVar[int]
    SEND_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEND_ROWS_FIELD_NUMBER: _ClassVar[int]
    EDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    halo: _containers.RepeatedScalarFieldContainer[int]
    halo_owner: _containers.RepeatedScalarFieldContainer[int]
    send_peer: _containers.RepeatedScalarFieldContainer[int]
    send_count: _containers.RepeatedScalarFieldContainer[int]
    send_rows: _containers.RepeatedScalarFieldContainer[int]
    edge_base: _containers.RepeatedScalarFieldContainer[int]
    last: bool
    def __init__(self, halo: _Optional[_Iterable[int]] = ..., halo_owner: _Optional[_Iterable[int]] = ..., send_peer: _Optional[_Iterable[int]] = ..., send_count: _Optional[_Iterable[int]] = ..., send_rows: _Optional[_Iterable[int]] = ..., edge_base: _Optional[_Iterable[int]] = ..., last: _Optional[bool] = ...) -> None: ...

class PartKept(_message.Message):
    __slots__ = ("owned", "entries")
    OWNED_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    owned: int
    entries: int
    def __init__(self, owned: _Optional[int] = ..., entries: _Optional[int] = ...) -> None: ...

class CentreEdges(_message.Message):
    __slots__ = ("centres", "counts", "sources")
    CENTRES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    centres: _containers.RepeatedScalarFieldContainer[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    sources: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, centres: _Optional[_Iterable[int]] = ..., counts: _Optional[_Iterable[int]] = ..., sources: _Optional[_Iterable[int]] = ...) -> None: ...

class BuildStats(_message.Message):
    __slots__ = ("points", "boundary_centres", "points_fetched", "bytes_fetched", "points_needed", "bytes_needed", "search_ms", "fetch_ms")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BOUNDARY_CENTRES_FIELD_NUMBER: _ClassVar[int]
    POINTS_FETCHED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FETCHED_FIELD_NUMBER: _ClassVar[int]
    POINTS_NEEDED_FIELD_NUMBER: _ClassVar[int]
    BYTES_NEEDED_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MS_FIELD_NUMBER: _ClassVar[int]
    FETCH_MS_FIELD_NUMBER: _ClassVar[int]
    points: int
    boundary_centres: int
    points_fetched: int
    bytes_fetched: int
    points_needed: int
    bytes_needed: int
    search_ms: float
    fetch_ms: float
    def __init__(self, points: _Optional[int] = ..., boundary_centres: _Optional[int] = ..., points_fetched: _Optional[int] = ..., bytes_fetched: _Optional[int] = ..., points_needed: _Optional[int] = ..., bytes_needed: _Optional[int] = ..., search_ms: _Optional[float] = ..., fetch_ms: _Optional[float] = ...) -> None: ...

class BuildOutput(_message.Message):
    __slots__ = ("edges", "stats", "kept", "halo")
    EDGES_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    HALO_FIELD_NUMBER: _ClassVar[int]
    edges: CentreEdges
    stats: BuildStats
    kept: PartKept
    halo: HeldHalo
    def __init__(self, edges: _Optional[_Union[CentreEdges, _Mapping]] = ..., stats: _Optional[_Union[BuildStats, _Mapping]] = ..., kept: _Optional[_Union[PartKept, _Mapping]] = ..., halo: _Optional[_Union[HeldHalo, _Mapping]] = ...) -> None: ...

class HeldHalo(_message.Message):
    __slots__ = ("ids", "owners")
    IDS_FIELD_NUMBER: _ClassVar[int]
    OWNERS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    owners: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., owners: _Optional[_Iterable[int]] = ...) -> None: ...

class FetchPointsRequest(_message.Message):
    __slots__ = ("build_id", "part", "lo", "hi", "reach")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    REACH_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    part: int
    lo: bytes
    hi: bytes
    reach: float
    def __init__(self, build_id: _Optional[str] = ..., part: _Optional[int] = ..., lo: _Optional[bytes] = ..., hi: _Optional[bytes] = ..., reach: _Optional[float] = ...) -> None: ...

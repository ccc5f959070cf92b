"""A Python client for the distgat coordinator's client API (gRPC, ``distgat.v1``).

Install with ``pip install "./python[client]"`` (from the repository root)::

    from distgat import client as distgat_client
    with distgat_client.connect("127.0.0.1:50051") as c:
        g = c.register_graph("data/cora/edges.npy", "data/cora/features.npy")
        job = c.submit(g.graph_id, "reference/cora-gat/model.json", normalize_features=True)
        for info in c.watch(job.job_id):
            print(distgat_client.state_name(info.state))
        out = c.fetch_output(job.job_id)          # numpy float32 [nodes, width]

Server-side paths (graph, features, model) are relative to the coordinator's data root.
The stubs (``distgat.v1.distgat_pb2``, ``distgat_pb2_grpc``) are generated from
``proto/distgat/v1/distgat.proto`` by ``clients/python/generate.sh`` and committed; CI
regenerates them and fails if they differ. Failed calls raise ``grpc.RpcError`` (use
``.code()`` and ``.details()``): UNAUTHENTICATED for a missing or wrong token, UNAVAILABLE
for a plaintext client at a TLS coordinator or a CA that did not sign its certificate.
TLS and tokens: ``connect(address, tls_ca="ca.pem", token_file="token")``; without
``token=`` or ``token_file=``, the token comes from the file ``DISTGAT_AUTH_TOKEN_FILE``
names (as the CLI's ``--auth-token-file``), else from ``DISTGAT_TOKEN``.
"""

from __future__ import annotations

import os
import warnings
from typing import Iterable, Iterator, Optional, Sequence

try:
    import grpc
    import numpy as np
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"distgat.client needs grpcio, protobuf and numpy ({exc}); install the client "
        'extra: pip install "distgat[client]" (from the repository: pip install "./python[client]")'
    ) from exc

from distgat.v1 import distgat_pb2 as pb
from distgat.v1 import distgat_pb2_grpc as pb_grpc

__all__ = [
    "Client",
    "connect",
    "pb",
    "pb_grpc",
    "state_name",
    "TERMINAL_STATES",
    "DEFAULT_CHUNK",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "read_token_file",
]

#: Upload chunk size; the coordinator accepts messages up to 4 MiB.
DEFAULT_CHUNK = 1 << 20

#: Job states after which a job never changes again.
TERMINAL_STATES = frozenset(
    {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
)

_CHANNEL_OPTIONS = [
    # Output chunks are at most 1 MiB of values plus their node ids; leave headroom.
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 8 << 20),
]


def state_name(state: int) -> str:
    """`JOB_STATE_RUNNING` -> `RUNNING`."""
    try:
        name = pb.JobState.Name(state)
    except ValueError:
        return f"UNKNOWN({state})"
    return name.removeprefix("JOB_STATE_")


#: The environment variable the client reads its bearer token from.
TOKEN_ENV = "DISTGAT_TOKEN"

#: The environment variable naming a file that holds the bearer token, as for the CLI's
#: ``--auth-token-file``; the file wins over ``DISTGAT_TOKEN``.
TOKEN_FILE_ENV = "DISTGAT_AUTH_TOKEN_FILE"

_TOKEN_CHARS = "the token must be printable ASCII without spaces (e.g. `openssl rand -hex 32`)"


def _check_token(source: str, token: str) -> str:
    if not all(33 <= ord(ch) <= 126 for ch in token):
        raise ValueError(f"{source}: {_TOKEN_CHARS}")
    return token


def read_token_file(path: str, source: str = "token_file") -> str:
    """The bearer token in the file `path`: its text, stripped, as the coordinator and the
    CLI read `--auth-token-file`.

    Raises ValueError naming `source` and the file when it cannot be read, is empty, or
    holds characters a header cannot carry.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"{source} {path}: {exc.strerror or exc}") from exc
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{source} {path}: {_TOKEN_CHARS}") from None
    if not token:
        raise ValueError(f"{source} {path}: the file is empty (it must hold the token)")
    return _check_token(f"{source} {path}", token)


def _token(token: Optional[str], token_file: Optional[str]) -> Optional[str]:
    """The token to send: `token`, else the file `token_file`, else the file
    `DISTGAT_AUTH_TOKEN_FILE` names, else `DISTGAT_TOKEN` (stripped; empty means none).
    A file wins over `DISTGAT_TOKEN`, with a warning when that is set too (as the CLI
    notes it)."""
    if token is not None and token_file is not None:
        raise ValueError("token and token_file were both given: give one")
    if token is not None:
        return _check_token("token", token) if token else None
    source = "token_file"
    if token_file is None and os.environ.get(TOKEN_FILE_ENV):
        token_file, source = os.environ[TOKEN_FILE_ENV], TOKEN_FILE_ENV
    env = os.environ.get(TOKEN_ENV, "").strip()
    if token_file is not None:
        from_file = read_token_file(token_file, source)
        if env:
            warnings.warn(
                f"using the token of {source} {token_file}; {TOKEN_ENV} is ignored", stacklevel=3
            )
        return from_file
    return _check_token(TOKEN_ENV, env) if env else None


def connect(
    address: str,
    timeout: Optional[float] = 120.0,
    *,
    tls_ca: Optional[str] = None,
    tls_cert: Optional[str] = None,
    tls_key: Optional[str] = None,
    tls_domain: Optional[str] = None,
    token: Optional[str] = None,
    token_file: Optional[str] = None,
) -> "Client":
    """Opens a channel to the coordinator at `host:port` (see `Client` for TLS and tokens).

    `timeout` is the deadline in seconds of each unary call and of each fetch
    (None: no deadline). `watch` has no deadline unless given one.
    """
    return Client(
        address,
        timeout=timeout,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_domain=tls_domain,
        token=token,
        token_file=token_file,
    )


def _read(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"{flag} {path}: {exc.strerror or exc}") from exc


class Client:
    """Wraps the generated `CoordinatorStub`; usable as a context manager."""

    def __init__(
        self,
        address: str,
        timeout: Optional[float] = 120.0,
        *,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        tls_domain: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
    ):
        """`address` is `host:port` or `https://host:port`.

        TLS: `tls_ca` (PEM path; required for TLS, which `https://` or any TLS argument
        selects) is the CA that signed the coordinator's certificate; `tls_cert` and
        `tls_key` (PEM paths, together) are an optional client certificate; `tls_domain`
        is the name in the coordinator's certificate when it differs from the host.
        `token` is sent as `authorization: Bearer <token>` on every call. `token_file`
        (not with `token`) names a file holding it (its text, stripped), as the CLI's
        `--auth-token-file`. Without either, the token comes from the file the
        `DISTGAT_AUTH_TOKEN_FILE` environment variable names, else from `DISTGAT_TOKEN`
        (stripped; empty means none); a file wins over `DISTGAT_TOKEN` (with a warning).
        Raises ValueError for a missing partner argument, an unreadable file, or an
        empty or unusable token file (naming the argument or variable and the path).
        """
        if not address:
            raise ValueError("coordinator address is empty (expected host:port)")
        tls = address.startswith("https://") or any(
            a is not None for a in (tls_ca, tls_cert, tls_key, tls_domain)
        )
        if address.startswith("http://") and tls:
            raise ValueError(f"address {address!r} is plaintext (http://) but TLS arguments are given")
        target = address.split("://", 1)[1] if "://" in address else address
        if (tls_cert is None) != (tls_key is None):
            given, missing = ("tls_cert", "tls_key") if tls_key is None else ("tls_key", "tls_cert")
            raise ValueError(f"{given} was given without {missing}: a client certificate needs both")
        if tls and tls_ca is None:
            raise ValueError(
                "TLS needs tls_ca: the CA (PEM) that signed the coordinator's certificate"
            )
        token = _token(token, token_file)
        self.address = address
        self.timeout = timeout
        self._metadata: Sequence[tuple[str, str]] = (
            [("authorization", f"Bearer {token}")] if token else []
        )
        if tls:
            assert tls_ca is not None
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read("tls_ca", tls_ca),
                private_key=_read("tls_key", tls_key) if tls_key else None,
                certificate_chain=_read("tls_cert", tls_cert) if tls_cert else None,
            )
            options = list(_CHANNEL_OPTIONS)
            if tls_domain:
                options.append(("grpc.ssl_target_name_override", tls_domain))
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self.stub = pb_grpc.CoordinatorStub(self.channel)

    # ---- lifecycle

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Blocks until the channel connects; raises grpc.FutureTimeoutError otherwise."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    # ---- graphs

    def register_graph(
        self,
        graph: str,
        features: str,
        graph_format: str = "",
        name: str = "",
        edge_features: str = "",
    ) -> pb.GraphInfo:
        """Registers a graph from files under the coordinator's data root.

        ``edge_features`` (optional) is a .npy [E, D] whose row e belongs to edge e of the
        graph file, for models whose layers have edge_dim."""
        req = pb.RegisterGraphRequest(
            name=name,
            graph=graph,
            graph_format=graph_format,
            features=features,
            edge_features=edge_features,
        )
        return self.stub.RegisterGraph(req, timeout=self.timeout, metadata=self._metadata)

    def upload_graph(
        self,
        graph_path: str,
        features_path: str,
        graph_format: str,
        name: str = "",
        chunk: int = DEFAULT_CHUNK,
        edge_features_path: str = "",
    ) -> pb.GraphInfo:
        """Streams local files: an UploadHeader, the graph bytes, the feature bytes, then
        (optional) the edge feature bytes ([E, D] .npy)."""
        if not graph_format:
            raise ValueError("upload_graph needs graph_format (npy | edgelist | metis | mtx)")
        if chunk <= 0:
            raise ValueError("chunk must be positive")
        header = pb.UploadHeader(
            name=name or os.path.basename(graph_path),
            graph_format=graph_format,
            graph_bytes=os.path.getsize(graph_path),
            features_bytes=os.path.getsize(features_path),
            edge_features_bytes=os.path.getsize(edge_features_path) if edge_features_path else 0,
        )

        def chunks() -> Iterator[pb.UploadGraphChunk]:
            yield pb.UploadGraphChunk(header=header)
            for data in _read_chunks(graph_path, chunk):
                yield pb.UploadGraphChunk(graph_data=data)
            for data in _read_chunks(features_path, chunk):
                yield pb.UploadGraphChunk(features_data=data)
            if edge_features_path:
                for data in _read_chunks(edge_features_path, chunk):
                    yield pb.UploadGraphChunk(edge_features_data=data)

        return self.stub.UploadGraph(chunks(), timeout=self.timeout, metadata=self._metadata)

    def register_neighbourhood(
        self,
        features: str,
        *,
        knn: Optional[int] = None,
        radius: Optional[float] = None,
        max_neighbours: Optional[int] = None,
        loop: bool = False,
        metric: str = "euclidean",
        points: str = "",
        parts: int = 0,
        threads_per_worker: int = 0,
        name: str = "",
        timeout: Optional[float] = None,
    ) -> pb.GraphInfo:
        """Registers a graph built from points: the kNN (``knn=K``) or radius
        (``radius=R``, optionally ``max_neighbours=M``) neighbourhood of ``points`` (.npy
        [N, D] under the data root; "" means the features), ``metric`` "euclidean" or
        "cosine" (1 - cosine similarity), PyG's ``loop``,
        built distributed over ``parts`` live workers (0: all). Edges j -> i, sorted by
        (target, source), as ``distgat neighbours`` writes them; jobs on the graph run on
        the build's spatial parts by default. Blocks until the build is done (no deadline
        unless ``timeout`` seconds are given); raises grpc.RpcError (INVALID_ARGUMENT for a
        bad rule or points whose rows differ from the features')."""
        if (knn is None) == (radius is None):
            raise ValueError("give exactly one of knn and radius")
        if max_neighbours is not None and radius is None:
            raise ValueError("max_neighbours applies to radius, not knn")
        spec = pb.NeighbourSpec(self_loops=loop, metric=metric)
        if knn is not None:
            if knn < 1:
                raise ValueError(f"knn must be at least 1, not {knn}")
            spec.knn = knn
        if radius is not None:
            spec.radius = radius
        if max_neighbours is not None:
            if max_neighbours < 1:
                raise ValueError(f"max_neighbours must be at least 1, not {max_neighbours}")
            spec.max_neighbours = max_neighbours
        req = pb.RegisterGraphRequest(
            name=name,
            features=features,
            points=points,
            neighbourhood=spec,
            parts=parts,
            threads_per_worker=threads_per_worker,
        )
        return self.stub.RegisterGraph(req, timeout=timeout)

    def fetch_edges(self, graph_id: str) -> np.ndarray:
        """A registered graph's edge index: int64 [2, E] (sources, then targets), in the
        graph's edge order (a built neighbourhood's is sorted by (target, source))."""
        total: Optional[int] = None
        sources: list[np.ndarray] = []
        targets: list[np.ndarray] = []
        got = 0
        req = pb.FetchEdgesRequest(graph_id=graph_id)
        for chunk in self.stub.FetchEdges(req, timeout=self.timeout):
            if total is None:
                total = chunk.total_edges
            if chunk.offset != got or len(chunk.sources) != len(chunk.targets) or chunk.total_edges != total:
                raise RuntimeError(f"edge chunk at offset {chunk.offset} after {got} edges")
            sources.append(np.asarray(chunk.sources, dtype=np.int64))
            targets.append(np.asarray(chunk.targets, dtype=np.int64))
            got += len(chunk.sources)
        if got != (total or 0):
            raise RuntimeError(f"the edge stream ended after {got} of {total} edges")
        if not sources:
            return np.zeros((2, 0), dtype=np.int64)
        return np.stack([np.concatenate(sources), np.concatenate(targets)])

    def list_graphs(self) -> Sequence[pb.GraphInfo]:
        return self.stub.ListGraphs(pb.ListGraphsRequest(), timeout=self.timeout, metadata=self._metadata).graphs

    def list_partitions(self) -> Sequence[pb.PartitionInfo]:
        req = pb.ListPartitionsRequest()
        return self.stub.ListPartitions(req, timeout=self.timeout, metadata=self._metadata).partitions

    # ---- jobs

    def submit(
        self,
        graph_id: str,
        model: str,
        *,
        parts: int = 0,
        method: str = "",
        normalize_features: bool = False,
        attention: bool = False,
        threads_per_worker: int = 0,
        partition_id: str = "",
    ) -> pb.JobInfo:
        """Queues a job. `parts=0`: one part per live worker; `method` "" means metis, or
        the build's spatial parts for a graph from `register_neighbourhood` (when `parts`
        matches); "spatial" asks for those explicitly."""
        req = pb.SubmitJobRequest(
            graph_id=graph_id,
            partition_id=partition_id,
            parts=parts,
            method=method,
            model=model,
            normalize_features=normalize_features,
            attention=attention,
            threads_per_worker=threads_per_worker,
        )
        return self.stub.SubmitJob(req, timeout=self.timeout, metadata=self._metadata)

    def watch(self, job_id: str, timeout: Optional[float] = None) -> Iterator[pb.JobInfo]:
        """Yields the job's current JobInfo, then one per change, until the job ends."""
        yield from self.stub.WatchJob(
            pb.GetJobRequest(job_id=job_id), timeout=timeout, metadata=self._metadata
        )

    def get_job(self, job_id: str) -> pb.JobInfo:
        return self.stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=self.timeout, metadata=self._metadata)

    def list_jobs(self) -> Sequence[pb.JobInfo]:
        return self.stub.ListJobs(pb.ListJobsRequest(), timeout=self.timeout, metadata=self._metadata).jobs

    def cancel(self, job_id: str, reason: str = "") -> pb.JobInfo:
        req = pb.CancelJobRequest(job_id=job_id, reason=reason)
        return self.stub.CancelJob(req, timeout=self.timeout, metadata=self._metadata)

    def delete_job(self, job_id: str) -> pb.DeleteResponse:
        """Deletes an ended job and its output files (FAILED_PRECONDITION while it is
        queued or running: cancel it first)."""
        return self.stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id), timeout=self.timeout, metadata=self._metadata)

    def delete_partition(self, partition_id: str) -> pb.DeleteResponse:
        """Deletes a partition (FAILED_PRECONDITION while a queued or running job uses it)."""
        req = pb.DeletePartitionRequest(partition_id=partition_id)
        return self.stub.DeletePartition(req, timeout=self.timeout, metadata=self._metadata)

    def delete_graph(self, graph_id: str) -> pb.DeleteResponse:
        """Forgets a graph, deleting an uploaded graph's files (FAILED_PRECONDITION while a
        partition or job refers to it)."""
        req = pb.DeleteGraphRequest(graph_id=graph_id)
        return self.stub.DeleteGraph(req, timeout=self.timeout, metadata=self._metadata)

    # ---- results

    def fetch_output(
        self,
        job_id: str,
        nodes: Optional[Iterable[int]] = None,
        start: Optional[int] = None,
        end: Optional[int] = None,
    ) -> np.ndarray:
        """Output rows of a finished job as a float32 array [rows, width].

        - `nodes`: the rows of these original node ids, in this order (repeats allowed).
        - `start`/`end`: the half-open id range [start, end); row i is node start + i.
          Without `end`, the range runs to the job's last node (one GetJob call).
        - neither: every node; row i is node i.
        """
        req = pb.FetchOutputRequest(job_id=job_id)
        wanted: Optional[np.ndarray] = None
        if nodes is not None:
            if start is not None or end is not None:
                raise ValueError("give either nodes or start/end, not both")
            listed = [int(n) for n in nodes]
            bad = [n for n in listed if n < 0]
            if bad:
                raise ValueError(f"node ids must be >= 0, got {bad[0]}")
            wanted = np.asarray(listed, dtype=np.uint64)
            req.nodes.CopyFrom(pb.NodeList(ids=wanted.tolist()))
        elif start is not None or end is not None:
            lo = 0 if start is None else int(start)
            hi = int(self.get_job(job_id).output_rows) if end is None else int(end)
            if lo < 0 or hi < lo:
                raise ValueError(f"bad node range [{lo}, {hi})")
            req.range.CopyFrom(pb.NodeRange(start=lo, end=hi))

        ids, values = self._fetch_rows(req)

        if wanted is not None:
            return _select(ids, values, wanted)
        if req.HasField("range"):
            return _place(ids, values, req.range.start, req.range.end - req.range.start)
        return _place(ids, values, 0, len(ids))

    def _fetch_rows(self, req: pb.FetchOutputRequest) -> tuple[np.ndarray, np.ndarray]:
        """All OutputRows chunks of one FetchOutput call: (ids [n] uint64, values [n, w])."""
        id_parts: list[np.ndarray] = []
        value_parts: list[np.ndarray] = []
        width: Optional[int] = None
        for rows in self.stub.FetchOutput(req, timeout=self.timeout, metadata=self._metadata):
            n = len(rows.nodes)
            if n == 0 and not rows.values:
                continue
            if width is None:
                width = rows.width
            elif rows.width != width:
                raise ValueError(f"output chunks disagree on width: {width} vs {rows.width}")
            if len(rows.values) != n * rows.width * 4:
                raise ValueError(
                    f"output chunk has {len(rows.values)} value bytes for {n} rows "
                    f"of width {rows.width} (expected {n * rows.width * 4})"
                )
            id_parts.append(np.fromiter(rows.nodes, dtype=np.uint64, count=n))
            block = np.frombuffer(rows.values, dtype="<f4").reshape(n, rows.width)
            value_parts.append(block)
        w = width or 0
        if not id_parts:
            return np.zeros(0, dtype=np.uint64), np.zeros((0, w), dtype=np.float32)
        ids = np.concatenate(id_parts)
        values = np.concatenate(value_parts).astype(np.float32, copy=False)
        return ids, values

    def fetch_attention(
        self, job_id: str, layer: int, nodes: Iterable[int], top_k: int = 0
    ) -> pb.FetchAttentionResponse:
        """Top `top_k` neighbours (0 means 10) by mean coefficient, for each target node."""
        req = pb.FetchAttentionRequest(
            job_id=job_id, layer=layer, nodes=[int(n) for n in nodes], top_k=top_k
        )
        return self.stub.FetchAttention(req, timeout=self.timeout, metadata=self._metadata)

    def explain(
        self, job_id: str, nodes: Iterable[int], layer: int = 0, top_k: int = 3
    ) -> dict[int, list[tuple[int, float]]]:
        """The neighbours that mattered most, as ``distgat explain`` prints them: for each
        target node, ``top_k`` pairs ``(source node, mean attention coefficient over the
        heads)``, largest first (jobs submitted with ``attention=True``)."""
        reply = self.fetch_attention(job_id, layer, nodes, top_k)
        return {
            t.node: [(n.source, float(n.mean_alpha)) for n in t.top] for t in reply.nodes
        }

    # ---- cluster

    def cluster_status(self) -> pb.ClusterStatusResponse:
        return self.stub.ClusterStatus(pb.ClusterStatusRequest(), timeout=self.timeout, metadata=self._metadata)


def _read_chunks(path: str, size: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            data = f.read(size)
            if not data:
                return
            yield data


def _place(ids: np.ndarray, values: np.ndarray, base: int, count: int) -> np.ndarray:
    """Rows placed by id: out[id - base] = row; every id in [base, base + count) once."""
    width = values.shape[1]
    out = np.zeros((count, width), dtype=np.float32)
    if len(ids) == 0 and count == 0:
        return out
    if len(ids) and (int(ids.min()) < base or int(ids.max()) >= base + count):
        raise ValueError(
            f"server sent node ids [{int(ids.min())}, {int(ids.max())}] "
            f"outside [{base}, {base + count})"
        )
    pos = (ids - np.uint64(base)).astype(np.int64)
    seen = np.bincount(pos, minlength=count)
    if len(ids) != count or np.any(seen != 1):
        missing = int(np.count_nonzero(seen == 0))
        repeated = int(np.count_nonzero(seen > 1))
        raise ValueError(
            f"expected each of the {count} nodes in [{base}, {base + count}) once; got "
            f"{len(ids)} rows ({missing} nodes missing, {repeated} repeated)"
        )
    out[pos] = values
    return out


def _select(ids: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Rows of `wanted` ids in the order asked, whatever order the server sent them in."""
    if len(wanted) == 0:
        return np.zeros((0, values.shape[1]), dtype=np.float32)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    idx = np.searchsorted(sorted_ids, wanted)
    idx_clipped = np.minimum(idx, max(len(sorted_ids) - 1, 0))
    found = (idx < len(sorted_ids)) & (sorted_ids[idx_clipped] == wanted)
    if len(sorted_ids) == 0 or not np.all(found):
        missing = wanted[~found] if len(sorted_ids) else wanted
        raise ValueError(f"server sent no row for node(s) {missing[:10].tolist()}")
    return np.ascontiguousarray(values[order[idx_clipped]], dtype=np.float32)

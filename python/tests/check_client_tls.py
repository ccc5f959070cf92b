#!/usr/bin/env python3
"""Checks distgat.client with TLS and a bearer token, from the repository root:

    DISTGAT_BIN=target/release/distgat python python/tests/check_client_tls.py REFERENCE.npy

REFERENCE.npy is `distgat infer`'s output on Cora (row normalisation). Makes a CA, a
certificate it signed for 127.0.0.1 and a second, unrelated CA in a temporary directory
with the repository's rcgen example (`cargo run --release -p distgat-tests --example
test_certs`, built on first use; no key is committed), starts its own coordinator and one
worker with --tls-cert/--tls-key/--tls-ca and --auth-token-file, and checks: a Cora job
over TLS with the token (from DISTGAT_TOKEN) fetches the reference exactly; the token
from `token_file=` and from the file DISTGAT_AUTH_TOKEN_FILE names is accepted, and a
token file wins over DISTGAT_TOKEN (with a warning); an unreadable or empty token file is
a ValueError naming it; a missing and a wrong token are UNAUTHENTICATED; a plaintext
client and a client trusting another CA are UNAVAILABLE. Stops only the processes it
started. Exits 1 on the first failed check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, List

import grpc
import numpy as np

from distgat import client as distgat_client

TOKEN = "python-check-token"
REPO = Path(__file__).resolve().parents[2]


def check(ok: bool, what: str) -> None:
    if not ok:
        print(f"check_client_tls.py: FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok  {what}")


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def make_certs(d: Path) -> None:
    """node-ca.pem, node-cert.pem and node-key.pem (for 127.0.0.1), and the other-* files of
    an unrelated CA, in `d`, by the test_certs example (rcgen)."""
    cargo = os.environ.get("CARGO", "cargo")
    subprocess.run([cargo, "run", "--release", "--locked", "--quiet", "-p", "distgat-tests",
                    "--example", "test_certs", "--", str(d)],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def refused(make: Callable[[], object], *names: str) -> str:
    """The ValueError `make` raises, checked to name each of `names`."""
    try:
        made = make()
    except ValueError as err:
        message = str(err)
        check(all(n in message for n in names), f"refused, naming {', '.join(names)}: {message}")
        return message
    close = getattr(made, "close", None)
    if close is not None:
        close()
    check(False, f"refused, naming {', '.join(names)}")
    return ""


def start(procs: List[subprocess.Popen], args: List[str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTGAT_")}
    p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    procs.append(p)
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    if not line.startswith("listening on "):
        raise SystemExit(f"check_client_tls.py: {args[1]} did not start: {line!r}")
    return line.removeprefix("listening on ")


def main() -> None:
    reference = np.load(sys.argv[1])
    exe = os.environ.get("DISTGAT_BIN", "target/release/distgat")
    procs: List[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_certs(d)
        (d / "token").write_text(TOKEN + "\n")
        tls = ["--tls-cert", str(d / "node-cert.pem"), "--tls-key", str(d / "node-key.pem"),
               "--tls-ca", str(d / "node-ca.pem"), "--auth-token-file", str(d / "token")]
        try:
            address = start(procs, [exe, "coordinator", "--listen", "127.0.0.1:0",
                                    "--work-dir", str(d / "work"), *tls])
            start(procs, [exe, "worker", "--coordinator", address, *tls])
            ca = str(d / "node-ca.pem")
            os.environ.pop("DISTGAT_AUTH_TOKEN_FILE", None)
            os.environ["DISTGAT_TOKEN"] = TOKEN
            with distgat_client.connect(address, tls_ca=ca) as c:
                c.wait_ready()
                g = c.register_graph("data/cora/edges.npy", "data/cora/features.npy")
                job = c.submit(g.graph_id, "reference/cora-gat/model.json", normalize_features=True)
                last = None
                for info in c.watch(job.job_id, timeout=120):
                    last = info
                check(last is not None and last.state == distgat_client.pb.JOB_STATE_SUCCEEDED,
                      "Cora job over TLS with the token from DISTGAT_TOKEN succeeded")
                out = c.fetch_output(job.job_id)
                check(out.dtype == reference.dtype and np.array_equal(out, reference),
                      "fetched output over TLS equals distgat infer's")
            # The token from a file: token_file=, or the file DISTGAT_AUTH_TOKEN_FILE names;
            # either wins over a wrong DISTGAT_TOKEN (with a warning, as the CLI notes it).
            os.environ["DISTGAT_TOKEN"] = "wrong"
            for what, kwargs in [("token_file=", {"token_file": str(d / "token")}),
                                 ("DISTGAT_AUTH_TOKEN_FILE", {})]:
                if not kwargs:
                    os.environ["DISTGAT_AUTH_TOKEN_FILE"] = str(d / "token")
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    with distgat_client.connect(address, tls_ca=ca, **kwargs) as c:
                        check(code_of(c.list_jobs) == grpc.StatusCode.OK,
                              f"token from {what}, over a wrong DISTGAT_TOKEN: served")
                check(any("DISTGAT_TOKEN is ignored" in str(w.message) for w in caught),
                      f"the token file of {what} over DISTGAT_TOKEN warns")
            del os.environ["DISTGAT_TOKEN"]
            (d / "empty-token").write_text(" \n")
            os.environ["DISTGAT_AUTH_TOKEN_FILE"] = str(d / "empty-token")
            refused(lambda: distgat_client.connect(address, tls_ca=ca),
                    "DISTGAT_AUTH_TOKEN_FILE", "empty-token", "empty")
            del os.environ["DISTGAT_AUTH_TOKEN_FILE"]
            refused(lambda: distgat_client.connect(address, tls_ca=ca,
                                                   token_file=str(d / "absent-token")),
                    "token_file", "absent-token")
            refused(lambda: distgat_client.connect(address, tls_ca=ca, token=TOKEN,
                                                   token_file=str(d / "token")),
                    "token", "token_file")
            with distgat_client.connect(address, tls_ca=ca) as c:
                check(code_of(c.list_jobs) == grpc.StatusCode.UNAUTHENTICATED,
                      "no token: UNAUTHENTICATED")
            with distgat_client.connect(address, tls_ca=ca, token="wrong") as c:
                check(code_of(c.list_jobs) == grpc.StatusCode.UNAUTHENTICATED,
                      "wrong token: UNAUTHENTICATED")
            with distgat_client.connect(address, timeout=5, token=TOKEN) as c:
                check(code_of(c.list_jobs) == grpc.StatusCode.UNAVAILABLE,
                      "plaintext client at a TLS coordinator: UNAVAILABLE")
            with distgat_client.connect(address, timeout=5, tls_ca=str(d / "other-ca.pem"), token=TOKEN) as c:
                check(code_of(c.list_jobs) == grpc.StatusCode.UNAVAILABLE,
                      "client trusting another CA: UNAVAILABLE")
            refused(lambda: distgat_client.connect(address, tls_ca=str(d / "absent.pem")),
                    "tls_ca", "absent.pem")
        finally:
            for p in procs:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()

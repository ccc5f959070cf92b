#!/usr/bin/env python3
"""Checks distgat servers with grpcio's own health and reflection clients.

    python check_health_reflection.py 127.0.0.1:50051 127.0.0.1:50052 ...

For each address:
  1. grpc.health.v1.Health/Check with service "" must answer SERVING;
  2. reflection (grpc.reflection.v1alpha) list_services must include grpc.health.v1.Health
     and distgat.v1.Coordinator or distgat.v1.Worker;
  3. for the coordinator: Health/Check "distgat.v1.Coordinator" must answer SERVING, and
     reflection file_containing_symbol "distgat.v1.Coordinator" must return a
     FileDescriptorProto that defines that service.

Needs only grpcio, grpcio-health-checking and grpcio-reflection (not the generated stubs).
Exits 0 when every address passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

TIMEOUT = 10.0
HEALTH = "grpc.health.v1.Health"
COORDINATOR = "distgat.v1.Coordinator"
WORKER = "distgat.v1.Worker"


class CheckFailed(Exception):
    pass


def rpc_error(what: str, err: grpc.RpcError) -> CheckFailed:
    return CheckFailed(f"{what}: {err.code().name}: {err.details()}")


def check_health(channel: grpc.Channel, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    label = f'health Check(service="{service}")'
    try:
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
    except grpc.RpcError as err:
        raise rpc_error(label, err) from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        raise CheckFailed(f"{label}: {status}, expected SERVING")
    print(f"  {label}: {status}")


def reflect(channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest, what: str):
    """One request on a ServerReflectionInfo stream; returns the single response."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    try:
        responses = list(stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT))
    except grpc.RpcError as err:
        raise rpc_error(f"reflection {what}", err) from None
    if len(responses) != 1:
        raise CheckFailed(f"reflection {what}: {len(responses)} responses, expected 1")
    resp = responses[0]
    if resp.HasField("error_response"):
        e = resp.error_response
        raise CheckFailed(f"reflection {what}: error {e.error_code}: {e.error_message}")
    return resp


def list_services(channel: grpc.Channel) -> list[str]:
    resp = reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""),
                   "list_services")
    if not resp.HasField("list_services_response"):
        raise CheckFailed("reflection list_services: no list_services_response")
    return [s.name for s in resp.list_services_response.service]


def file_containing_symbol(channel: grpc.Channel, symbol: str) -> None:
    what = f'file_containing_symbol("{symbol}")'
    resp = reflect(channel,
                   reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol), what)
    if not resp.HasField("file_descriptor_response"):
        raise CheckFailed(f"reflection {what}: no file_descriptor_response")
    blobs = resp.file_descriptor_response.file_descriptor_proto
    if not blobs:
        raise CheckFailed(f"reflection {what}: no FileDescriptorProto returned")
    package, _, service = symbol.rpartition(".")
    found = None
    names = []
    for blob in blobs:
        fd = descriptor_pb2.FileDescriptorProto()
        try:
            fd.ParseFromString(blob)
        except Exception as err:  # protobuf raises DecodeError
            raise CheckFailed(f"reflection {what}: bad FileDescriptorProto: {err}") from None
        names.append(fd.name)
        if fd.package == package:
            for svc in fd.service:
                if svc.name == service:
                    found = (fd, svc)
    if found is None:
        raise CheckFailed(
            f"reflection {what}: {len(blobs)} file(s) {names}, none defines service {symbol}"
        )
    fd, svc = found
    methods = ", ".join(m.name for m in svc.method)
    print(
        f"  reflection {what}: {fd.name} (package {fd.package}, {len(fd.message_type)} "
        f"messages); {symbol} has {len(svc.method)} methods: {methods}"
    )


def check(address: str) -> str:
    """Runs every check against one address; returns its role."""
    with grpc.insecure_channel(address) as channel:
        check_health(channel, "")
        services = list_services(channel)
        print(f"  reflection list_services: {', '.join(services) or '(none)'}")
        if HEALTH not in services:
            raise CheckFailed(f"reflection list_services does not include {HEALTH}")
        if COORDINATOR in services:
            role = "coordinator"
        elif WORKER in services:
            role = "worker"
        else:
            raise CheckFailed(
                f"reflection list_services includes neither {COORDINATOR} nor {WORKER}"
            )
        if role == "coordinator":
            check_health(channel, COORDINATOR)
            file_containing_symbol(channel, COORDINATOR)
        return role


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Check gRPC health (SERVING) and server reflection of distgat servers.",
    )
    p.add_argument("addresses", nargs="+", metavar="ADDR", help="host:port of a coordinator or worker")
    args = p.parse_args(argv)

    failures = 0
    for address in args.addresses:
        print(f"{address}:")
        try:
            role = check(address)
        except CheckFailed as err:
            sys.stdout.flush()
            print(f"  FAIL: {err}", file=sys.stderr)
            failures += 1
            continue
        print(f"  OK ({role})")
    if failures:
        sys.stdout.flush()
        print(f"{failures} of {len(args.addresses)} address(es) failed", file=sys.stderr)
        return 1
    print(f"all {len(args.addresses)} address(es) passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A client no one here wrote by hand: Python stubs generated from proto/ by
grpcio-tools call a running scheduler, and grpcio-reflection lists its
services. Prints one JSON document with what it saw.

Usage: scheduler_client.py PROTO_DIR ADDRESS API_KEY
"""

import importlib
import json
import os
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_tools import protoc


def generate(proto_dir: str, out_dir: str) -> None:
    files = [
        os.path.join("calbridge", "v1", f)
        for f in ("calendar.proto", "adapter.proto", "scheduler.proto", "sandbox.proto")
    ]
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *files]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")


def main() -> None:
    proto_dir, address, api_key = sys.argv[1:4]
    out = tempfile.mkdtemp()
    generate(proto_dir, out)
    sys.path.insert(0, out)
    cal = importlib.import_module("calbridge.v1.calendar_pb2")
    sch = importlib.import_module("calbridge.v1.scheduler_pb2")
    sch_grpc = importlib.import_module("calbridge.v1.scheduler_pb2_grpc")

    channel = grpc.insecure_channel(address)
    auth = (("authorization", f"Bearer {api_key}"),)
    result = {}

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    result["services"] = sorted(s.name for r in responses for s in r.list_services_response.service)

    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="calbridge.v1.Scheduler"))
    result["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)

    scheduler = sch_grpc.SchedulerStub(channel)
    account = scheduler.ConnectPasswordAccount(
        sch.ConnectPasswordAccountRequest(
            provider=cal.PROVIDER_SANDBOX,
            username="python@example.com",
            password="python-pw-1",
            access_level=cal.ACCESS_LEVEL_READ,
        ),
        metadata=auth,
    )
    result["account_status"] = cal.AccountStatus.Name(account.status)
    listed = scheduler.ListAccounts(sch.ListAccountsRequest(), metadata=auth)
    result["accounts"] = [a.account_id for a in listed.accounts]
    result["account_id"] = account.account_id

    try:
        scheduler.ListAccounts(sch.ListAccountsRequest(), metadata=(("authorization", "Bearer nope"),))
        result["bad_key"] = "accepted"
    except grpc.RpcError as e:
        result["bad_key"] = e.code().name

    try:
        scheduler.UpsertEvent(
            sch.UpsertEventRequest(account_id=account.account_id, calendar_id="x", client_event_id="", event=cal.Event()),
            metadata=auth,
        )
        result["bad_input"] = "accepted"
    except grpc.RpcError as e:
        result["bad_input"] = e.code().name
        result["bad_input_message"] = e.details()

    print(json.dumps(result))


if __name__ == "__main__":
    main()

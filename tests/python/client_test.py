#!/usr/bin/env python3
"""Cross-language test: a plain grpcio client drives a running replyflow server.

Run by a Rust integration test (with the python of scripts/test's venv, $REPLYFLOW_PYTHON):

    $REPLYFLOW_PYTHON tests/python/client_test.py --addr 127.0.0.1:PORT --bpmn examples/expense.bpmn

The server must accept `x-user-id` metadata (development mode). The stubs are generated at run time
from proto/ (../../proto from this file) with grpc_tools.protoc into a temporary directory, so
this checks that the .proto files compile for another language and that the wire format agrees.

Flow: users alice (manager), bob (employee, manager alice), carol (finance) -> deploy the expense
definition -> bob starts it (amount 20000, so finance must approve too; a retry with the same
request_id returns the same instance) -> alice approves (a retry with the same request_id answers
the same and opens nothing more) -> carol approves -> the instance is COMPLETED with the
decisions in its variables -> completing a closed task is FAILED_PRECONDITION.

Exit 0 printing "python client: N checks passed", or 1 with "python client: FAILED: ...".
Needs: grpcio and grpcio-tools (which brings protobuf).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import traceback
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
PROTO_ROOT = REPO_ROOT / "proto"

PREFIX = "python client"


class CheckFailed(Exception):
    """A check did not hold; the message says which and what was seen."""


class Checker:
    def __init__(self) -> None:
        self.passed = 0

    def check(self, condition: bool, what: str, seen: object = None) -> None:
        if not condition:
            detail = f" (saw: {seen!r})" if seen is not None else ""
            raise CheckFailed(f"check {self.passed + 1} failed: {what}{detail}")
        self.passed += 1
        print(f"  ok {self.passed:2d}: {what}", flush=True)


def well_known_protos_dir() -> str:
    """grpc_tools ships google/protobuf/*.proto (Struct, Timestamp, ...) in grpc_tools/_proto."""
    try:
        from importlib import resources

        path = resources.files("grpc_tools") / "_proto"
        if path.is_dir():
            return str(path)
    except (ImportError, AttributeError, TypeError):
        pass
    import grpc_tools

    path = Path(grpc_tools.__file__).resolve().parent / "_proto"
    if not path.is_dir():
        raise CheckFailed(f"grpc_tools has no bundled _proto directory at {path}")
    return str(path)


def generate_stubs(out_dir: str) -> None:
    from grpc_tools import protoc

    if not PROTO_ROOT.is_dir():
        raise CheckFailed(f"proto directory not found: {PROTO_ROOT}")
    files = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    if not files:
        raise CheckFailed(f"no .proto files under {PROTO_ROOT}")
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known_protos_dir()}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise CheckFailed(f"grpc_tools.protoc failed (exit {rc}) on {', '.join(files)}")


def import_stubs(out_dir: str) -> dict:
    sys.path.insert(0, out_dir)
    importlib.invalidate_caches()
    names = ["common_pb2", "directory_pb2", "directory_pb2_grpc", "workflow_pb2",
             "workflow_pb2_grpc", "task_pb2", "task_pb2_grpc"]
    return {name: importlib.import_module(f"replyflow.v1.{name}") for name in names}


def enum_name(message, field: str) -> str:
    """Name of an enum field's value (e.g. INSTANCE_STATUS_RUNNING), whatever the enum type is called."""
    value = getattr(message, field)
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    if descriptor.enum_type is None:
        return str(value)
    by_number = descriptor.enum_type.values_by_number
    return by_number[value].name if value in by_number else f"<unknown {value}>"


def struct_to_dict(struct) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(struct)


def make_struct(values: dict):
    from google.protobuf import struct_pb2

    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def run(args: argparse.Namespace, ck: Checker) -> None:
    import grpc

    with tempfile.TemporaryDirectory(prefix="rf-pystubs-") as out_dir:
        generate_stubs(out_dir)
        m = import_stubs(out_dir)
        directory, workflow, task = m["directory_pb2"], m["workflow_pb2"], m["task_pb2"]
        ck.check(True, f"stubs generated from {PROTO_ROOT} and imported")

        bpmn_path = Path(args.bpmn)
        if not bpmn_path.is_file() and not bpmn_path.is_absolute():
            bpmn_path = REPO_ROOT / args.bpmn
        if not bpmn_path.is_file():
            raise CheckFailed(f"BPMN file not found: {args.bpmn}")
        bpmn_xml = bpmn_path.read_bytes()

        channel = grpc.insecure_channel(args.addr)
        try:
            grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
        except grpc.FutureTimeoutError:
            raise CheckFailed(f"server at {args.addr} not reachable within {args.connect_timeout}s") from None

        directory_stub = m["directory_pb2_grpc"].DirectoryServiceStub(channel)
        workflow_stub = m["workflow_pb2_grpc"].WorkflowServiceStub(channel)
        task_stub = m["task_pb2_grpc"].TaskServiceStub(channel)

        def call(method, request, user: str, what: str):
            try:
                return method(request, metadata=(("x-user-id", user),), timeout=args.timeout)
            except grpc.RpcError as err:
                raise CheckFailed(f"{what} as {user!r}: {err.code().name}: {err.details()}") from None

        # (1) the directory
        users = [
            directory.User(id="alice", display_name="Alice (manager)", email="alice@example.com",
                           locale="en"),
            directory.User(id="bob", display_name="Bob (employee)", email="bob@example.com",
                           manager_id="alice", locale="en"),
            directory.User(id="carol", display_name="Carol (finance)", email="carol@example.com",
                           locale="en"),
        ]
        for user in users:
            got = call(directory_stub.UpsertUser, directory.UpsertUserRequest(user=user),
                       args.admin_user, f"UpsertUser {user.id}")
            ck.check(got.id == user.id and got.email == user.email and got.manager_id == user.manager_id,
                     f"UpsertUser {user.id} returns the entry", (got.id, got.email, got.manager_id))

        # (2) deploy
        definition = call(workflow_stub.DeployDefinition,
                          workflow.DeployDefinitionRequest(bpmn_xml=bpmn_xml),
                          args.admin_user, "DeployDefinition")
        ck.check(definition.key == "expense", "DeployDefinition key == 'expense'", definition.key)
        ck.check(definition.version >= 1, "DeployDefinition version >= 1", definition.version)

        # (3) start as bob
        variables = {"manager": "alice", "finance": "carol", "amount": 20000, "reason": "conference"}
        start_request = workflow.StartProcessRequest(definition_key="expense",
                                                     business_key=args.business_key,
                                                     variables=make_struct(variables),
                                                     request_id=str(uuid.uuid4()))
        instance = call(workflow_stub.StartProcess, start_request, "bob", "StartProcess")
        ck.check(bool(instance.id), "StartProcess returns an instance id", instance.id)
        ck.check(enum_name(instance, "status") == "INSTANCE_STATUS_RUNNING",
                 "started instance is RUNNING", enum_name(instance, "status"))
        ck.check(instance.started_by == "bob", "started_by == 'bob'", instance.started_by)
        open_tasks = list(instance.open_tasks)
        ck.check(len(open_tasks) == 1, "exactly one open task after start",
                 [(t.activity_id, t.assignee) for t in open_tasks])
        manager_task = open_tasks[0]
        ck.check(manager_task.assignee == "alice", "the open task is assigned to alice",
                 manager_task.assignee)
        ck.check(manager_task.activity_id == "manager_approval",
                 "the open task is manager_approval", manager_task.activity_id)
        ck.check(enum_name(manager_task, "status") == "TASK_STATUS_OPEN", "the task is OPEN",
                 enum_name(manager_task, "status"))
        retried = call(workflow_stub.StartProcess, start_request, "bob", "StartProcess (retry)")
        ck.check(retried.id == instance.id,
                 "StartProcess retried with the same request_id returns the same instance",
                 (retried.id, instance.id))

        # (4) alice approves
        complete_request = task.CompleteTaskRequest(task_id=manager_task.id, outcome="approve",
                                                    comment="ok", request_id=str(uuid.uuid4()))
        response = call(task_stub.CompleteTask, complete_request, "alice",
                        "CompleteTask manager_approval")
        done = response.task
        ck.check(done.id == manager_task.id and enum_name(done, "status") == "TASK_STATUS_COMPLETED",
                 "manager task is COMPLETED", (done.id, enum_name(done, "status")))
        ck.check(done.outcome == "approve" and done.comment == "ok",
                 "manager task keeps outcome 'approve' and comment 'ok'", (done.outcome, done.comment))
        ck.check(done.completed_by == "alice"
                 and enum_name(done, "completed_via") == "COMPLETED_VIA_API",
                 "manager task completed_by alice via API",
                 (done.completed_by, enum_name(done, "completed_via")))
        after_manager = response.instance
        ck.check(enum_name(after_manager, "status") == "INSTANCE_STATUS_RUNNING",
                 "instance still RUNNING after the manager's approval", enum_name(after_manager, "status"))
        open_tasks = list(after_manager.open_tasks)
        ck.check(len(open_tasks) == 1 and open_tasks[0].assignee == "carol"
                 and open_tasks[0].activity_id == "finance_approval",
                 "one open task: finance_approval for carol",
                 [(t.activity_id, t.assignee) for t in open_tasks])
        finance_task = open_tasks[0]
        retried = call(task_stub.CompleteTask, complete_request, "alice",
                       "CompleteTask manager_approval (retry)")
        ck.check(retried.task.id == manager_task.id and retried.task.outcome == "approve"
                 and [t.id for t in retried.instance.open_tasks] == [finance_task.id],
                 "CompleteTask retried with the same request_id answers the same, no second effect",
                 (retried.task.id, [(t.activity_id, t.id) for t in retried.instance.open_tasks]))

        # (5) carol approves
        response = call(task_stub.CompleteTask,
                        task.CompleteTaskRequest(task_id=finance_task.id, outcome="approve",
                                                 comment="paid", request_id=str(uuid.uuid4())),
                        "carol", "CompleteTask finance_approval")
        ck.check(enum_name(response.instance, "status") == "INSTANCE_STATUS_COMPLETED",
                 "instance COMPLETED after finance approval", enum_name(response.instance, "status"))
        ck.check(len(response.instance.open_tasks) == 0, "no open task left",
                 [(t.activity_id, t.assignee) for t in response.instance.open_tasks])

        # (6) read it back
        fetched = call(workflow_stub.GetProcessInstance,
                       workflow.GetProcessInstanceRequest(id=instance.id), "bob", "GetProcessInstance")
        ck.check(fetched.id == instance.id and enum_name(fetched, "status") == "INSTANCE_STATUS_COMPLETED",
                 "GetProcessInstance says COMPLETED", (fetched.id, enum_name(fetched, "status")))
        got_vars = struct_to_dict(fetched.variables)
        manager_vars = got_vars.get("manager_approval")
        ck.check(isinstance(manager_vars, dict) and manager_vars.get("outcome") == "approve",
                 "variables manager_approval.outcome == 'approve'", got_vars)
        ck.check(got_vars.get("amount") == 20000 and got_vars.get("reason") == "conference",
                 "start variables survive the round trip (amount 20000, reason)", got_vars)

        # (7) a closed task cannot be completed again
        try:
            task_stub.CompleteTask(
                task.CompleteTaskRequest(task_id=manager_task.id, outcome="approve", comment="again",
                                         request_id=str(uuid.uuid4())),
                metadata=(("x-user-id", "alice"),), timeout=args.timeout)
        except grpc.RpcError as err:
            ck.check(err.code() == grpc.StatusCode.FAILED_PRECONDITION,
                     "CompleteTask on a closed task is FAILED_PRECONDITION",
                     f"{err.code().name}: {err.details()}")
        else:
            raise CheckFailed("CompleteTask on a closed task succeeded; expected FAILED_PRECONDITION")

        channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="host:port of the replyflow gRPC server")
    parser.add_argument("--bpmn", required=True,
                        help="the expense BPMN file (relative to the cwd or the repository root)")
    parser.add_argument("--admin-user", default="admin",
                        help="x-user-id for UpsertUser and DeployDefinition (default: admin)")
    parser.add_argument("--business-key", default="PY-1")
    parser.add_argument("--timeout", type=float, default=15.0, help="deadline of each RPC, seconds")
    parser.add_argument("--connect-timeout", type=float, default=20.0,
                        help="how long to wait for the server to accept connections, seconds")
    args = parser.parse_args(argv)

    ck = Checker()
    try:
        run(args, ck)
    except CheckFailed as failure:
        print(f"{PREFIX}: FAILED: {failure}", file=sys.stderr, flush=True)
        print(f"{PREFIX}: {ck.passed} checks passed before the failure", file=sys.stderr, flush=True)
        return 1
    except Exception:  # noqa: BLE001 - any surprise is a failure with its traceback
        traceback.print_exc()
        print(f"{PREFIX}: FAILED: unexpected error after {ck.passed} checks (traceback above)",
              file=sys.stderr, flush=True)
        return 1
    print(f"{PREFIX}: {ck.passed} checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

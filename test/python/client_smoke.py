"""Smoke test of a Python client generated from proto/citadel/v1 against a running server.

Run by test/integration/api-python-client.test.ts, which generates the stubs with protoc +
grpc_python_plugin into a temp dir on PYTHONPATH. Environment:
  CITADEL_SERVER   host:port of the TLS endpoint, for example localhost:7443
  CITADEL_CA       path of the CA certificate (PEM) that signed the server certificate
  CITADEL_API_KEY  API key sent as "authorization: Bearer <key>"
Prints a JSON summary on stdout; any failed check raises, so the exit code is non-zero.
"""

import json
import os
import sys
import uuid

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, json_format, struct_pb2

from citadel.v1 import execution_pb2, task_pb2, task_service_pb2, task_service_pb2_grpc

TIMEOUT = 10  # seconds per call


def expect_error(code, fn, *args, contains=None):
    """Calls fn and returns the RpcError, checking its code and that its details contain `contains`."""
    try:
        fn(*args)
    except grpc.RpcError as err:
        assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()}"
        if contains is not None:
            assert contains in (err.details() or ""), (
                f"{code} details should name {contains!r}: {err.details()!r}"
            )
        return err
    raise AssertionError(f"expected {code}, the call succeeded")


def main():
    server = os.environ["CITADEL_SERVER"]
    with open(os.environ["CITADEL_CA"], "rb") as f:
        ca = f.read()
    key = os.environ["CITADEL_API_KEY"]

    channel = grpc.secure_channel(server, grpc.ssl_channel_credentials(root_certificates=ca))
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    md = (("authorization", f"Bearer {key}"),)

    def call(method, request):
        return method(request, metadata=md, timeout=TIMEOUT)

    summary = {}
    suite = uuid.uuid4().hex[:12]
    labels = {"suite": suite}

    # A one-time task due now, with a Struct payload and a Duration timeout.
    payload = struct_pb2.Struct()
    payload.update({"argv": ["echo", "hi"], "env": {"GREETING": "hello"}, "n": 3})
    one = call(
        stub.CreateTask,
        task_service_pb2.CreateTaskRequest(
            task=task_pb2.Task(
                type="container.run",
                payload=payload,
                one_time=task_pb2.OneTimeSchedule(),
                timeout=duration_pb2.Duration(seconds=90),
                labels=labels,
            )
        ),
    )
    assert one.created, "first create should report created"
    assert one.task.id.startswith("t_"), f"task id: {one.task.id!r}"
    assert one.task.WhichOneof("schedule") == "one_time", one.task.WhichOneof("schedule")
    assert one.task.timeout.seconds == 90, f"timeout: {one.task.timeout}"
    got_payload = json_format.MessageToDict(one.task.payload)
    assert got_payload == {"argv": ["echo", "hi"], "env": {"GREETING": "hello"}, "n": 3}, (
        f"payload round trip: {got_payload}"
    )
    summary["one_time_id"] = one.task.id
    summary["payload"] = got_payload
    summary["timeout_seconds"] = one.task.timeout.seconds

    # A cron task in a time zone.
    cron = call(
        stub.CreateTask,
        task_service_pb2.CreateTaskRequest(
            task=task_pb2.Task(
                type="report.build",
                cron=task_pb2.CronSchedule(
                    expression="30 2 * * *",
                    time_zone="Europe/Berlin",
                    overlap_policy=task_pb2.OVERLAP_POLICY_ALLOW,
                ),
                priority=task_pb2.PRIORITY_LOW,
                labels=labels,
            )
        ),
    ).task
    task_id = cron.id
    assert cron.enabled, "a new task is enabled"
    assert cron.HasField("next_run_time"), "a cron task has a next run time"

    got = call(stub.GetTask, task_service_pb2.GetTaskRequest(id=task_id)).task
    assert got.id == task_id, got.id
    assert got.cron.expression == "30 2 * * *", got.cron.expression
    assert got.cron.time_zone == "Europe/Berlin", got.cron.time_zone
    assert got.priority == task_pb2.PRIORITY_LOW, got.priority
    next_run = got.next_run_time.ToDatetime()
    # 02:30 in Berlin is 00:30 or 01:30 UTC, depending on daylight-saving time.
    assert (next_run.hour, next_run.minute) in ((0, 30), (1, 30)), f"next run {next_run}"
    summary["cron_id"] = task_id
    summary["cron_time_zone"] = got.cron.time_zone
    summary["cron_next_run_time"] = got.next_run_time.ToJsonString()

    # ListTasks with a label filter, one task per page.
    listed, token, pages = [], "", 0
    while True:
        page = call(
            stub.ListTasks,
            task_service_pb2.ListTasksRequest(page_size=1, page_token=token, labels=labels),
        )
        pages += 1
        assert len(page.tasks) <= 1, f"page_size 1 returned {len(page.tasks)} tasks"
        listed.extend(t.id for t in page.tasks)
        token = page.next_page_token
        if not token:
            break
        assert pages < 10, "pagination does not end"
    assert sorted(listed) == sorted([one.task.id, task_id]), f"listed {listed}"
    assert listed == sorted(listed), f"tasks are in id order: {listed}"
    other = call(
        stub.ListTasks, task_service_pb2.ListTasksRequest(labels={"suite": suite + "-none"})
    )
    assert len(other.tasks) == 0, "a label filter with no match lists nothing"
    summary["listed"] = len(listed)
    summary["list_pages"] = pages

    # UpdateTask with a FieldMask: only priority changes.
    updated = call(
        stub.UpdateTask,
        task_service_pb2.UpdateTaskRequest(
            task=task_pb2.Task(id=task_id, priority=task_pb2.PRIORITY_HIGH, type="ignored.type"),
            update_mask=field_mask_pb2.FieldMask(paths=["priority"]),
            etag=got.etag,
        ),
    ).task
    assert updated.priority == task_pb2.PRIORITY_HIGH, updated.priority
    assert updated.type == "report.build", f"type is outside the mask: {updated.type}"
    assert updated.etag != got.etag, "an update changes the etag"
    expect_error(
        grpc.StatusCode.ABORTED,
        call,
        stub.UpdateTask,
        task_service_pb2.UpdateTaskRequest(
            task=task_pb2.Task(id=task_id, priority=task_pb2.PRIORITY_LOW),
            update_mask=field_mask_pb2.FieldMask(paths=["priority"]),
            etag=got.etag,
        ),
    )
    summary["priority"] = task_pb2.Priority.Name(updated.priority)

    # RunTask, then ListExecutions and CancelExecution.
    run = call(stub.RunTask, task_service_pb2.RunTaskRequest(id=task_id)).execution
    assert run.task_id == task_id, run.task_id
    assert run.state == execution_pb2.EXECUTION_STATE_PENDING, run.state
    assert run.trigger == execution_pb2.EXECUTION_TRIGGER_MANUAL, run.trigger
    assert run.priority == task_pb2.PRIORITY_HIGH, run.priority
    execs = call(
        stub.ListExecutions, task_service_pb2.ListExecutionsRequest(task_id=task_id)
    ).executions
    assert [e.id for e in execs] == [run.id], f"executions: {[e.id for e in execs]}"
    cancelled = call(
        stub.CancelExecution, task_service_pb2.CancelExecutionRequest(id=run.id)
    ).execution
    assert cancelled.state == execution_pb2.EXECUTION_STATE_CANCELLED, cancelled.state
    assert cancelled.HasField("end_time"), "a cancelled execution has an end time"
    expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        call,
        stub.CancelExecution,
        task_service_pb2.CancelExecutionRequest(id=run.id),
    )
    pending = call(
        stub.ListExecutions,
        task_service_pb2.ListExecutionsRequest(
            task_id=task_id, states=[execution_pb2.EXECUTION_STATE_PENDING]
        ),
    ).executions
    assert len(pending) == 0, f"no pending execution is left: {[e.id for e in pending]}"
    summary["cancelled_state"] = execution_pb2.ExecutionState.Name(cancelled.state)

    # WatchExecutions from the task's current revision (so nothing is missed), then RunTask:
    # the stream must deliver the new execution.
    etag = call(stub.GetTask, task_service_pb2.GetTaskRequest(id=task_id)).task.etag
    stream = stub.WatchExecutions(
        task_service_pb2.WatchExecutionsRequest(task_id=task_id, after_revision=int(etag)),
        metadata=md,
        timeout=TIMEOUT,
    )
    try:
        second = call(stub.RunTask, task_service_pb2.RunTaskRequest(id=task_id)).execution
        assert second.run == run.run + 1, f"run numbers: {run.run} then {second.run}"
        event = None
        for response in stream:  # ends with DEADLINE_EXCEEDED after TIMEOUT at worst
            assert response.revision > int(etag), f"revision {response.revision} <= {etag}"
            if response.execution.id == second.id:
                event = response
                break
        assert event is not None, "the watch stream ended without the new execution"
        assert event.execution.state == execution_pb2.EXECUTION_STATE_PENDING, event.execution
    finally:
        stream.cancel()
    summary["watched_execution"] = event.execution.id
    summary["watched_state"] = execution_pb2.ExecutionState.Name(event.execution.state)

    # DeleteTask cancels the active execution; the task is gone afterwards.
    deleted = call(stub.DeleteTask, task_service_pb2.DeleteTaskRequest(id=task_id))
    assert deleted.cancelled_executions == 1, f"cancelled {deleted.cancelled_executions}"
    summary["delete_cancelled"] = deleted.cancelled_executions
    call(stub.DeleteTask, task_service_pb2.DeleteTaskRequest(id=one.task.id))

    # Error codes.
    bad = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        call,
        stub.CreateTask,
        task_service_pb2.CreateTaskRequest(
            task=task_pb2.Task(
                type="container.run", cron=task_pb2.CronSchedule(expression="every tuesday")
            )
        ),
        contains="cron.expression",
    )
    bad_zone = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        call,
        stub.CreateTask,
        task_service_pb2.CreateTaskRequest(
            task=task_pb2.Task(
                type="container.run",
                cron=task_pb2.CronSchedule(expression="* * * * *", time_zone="Mars/Olympus"),
            )
        ),
        contains="cron.time_zone",
    )
    missing = expect_error(
        grpc.StatusCode.NOT_FOUND, call, stub.GetTask, task_service_pb2.GetTaskRequest(id=task_id)
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        call,
        stub.GetExecution,
        task_service_pb2.GetExecutionRequest(id=f"{task_id}-00000099-01"),
    )
    unauth = expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        lambda: stub.ListTasks(task_service_pb2.ListTasksRequest(), timeout=TIMEOUT),
    )
    expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        lambda: stub.ListTasks(
            task_service_pb2.ListTasksRequest(),
            metadata=(("authorization", "Bearer sk_live_wrong"),),
            timeout=TIMEOUT,
        ),
    )
    unauth_stream = stub.WatchExecutions(
        task_service_pb2.WatchExecutionsRequest(), timeout=TIMEOUT
    )
    expect_error(grpc.StatusCode.UNAUTHENTICATED, lambda: next(unauth_stream))
    summary["errors"] = {
        "bad_cron": bad.details(),
        "bad_time_zone": bad_zone.details(),
        "not_found": missing.code().name,
        "unauthenticated": unauth.code().name,
    }

    channel.close()
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

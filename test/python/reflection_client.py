"""A reflection client that resolves types the way grpcurl does, from reflection alone.

Run by test/integration/api-reflection.test.ts. It asks for the file declaring a service, then
fetches every import it does not hold yet by file name (as grpcurl's reflection client does),
builds a descriptor pool from what it got, describes TaskService and invokes ListTasks with an
API key using message classes made from that pool. Prints a JSON summary on stdout.

Env: CITADEL_SERVER (host:port), CITADEL_CA (PEM file), CITADEL_API_KEY; the reflection stubs
(generated from Debian's grpc-proto as citadel_reflection_pb2*) on PYTHONPATH.
"""
import json
import os

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

import citadel_reflection_pb2 as reflection_pb2
import citadel_reflection_pb2_grpc as reflection_pb2_grpc

SERVICE = "citadel.v1.TaskService"


def message_class(pool, name):
    descriptor = pool.FindMessageTypeByName(name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def main():
    with open(os.environ["CITADEL_CA"], "rb") as f:
        creds = grpc.ssl_channel_credentials(f.read())
    channel = grpc.secure_channel(os.environ["CITADEL_SERVER"], creds)
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    def ask(**request):
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=10)
        return next(responses)

    services = [s.name for s in ask(list_services="*").list_services_response.service]

    files = {}
    errors = []

    def take(response):
        if response.HasField("error_response"):
            errors.append(response.error_response.error_message)
            return
        for raw in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            files.setdefault(proto.name, proto)

    take(ask(file_containing_symbol=SERVICE))
    by_filename = []
    while True:
        missing = sorted({d for f in files.values() for d in f.dependency if d not in files})
        missing = [m for m in missing if m not in by_filename]
        if not missing:
            break
        for name in missing:
            by_filename.append(name)
            take(ask(file_by_filename=name))

    # Each import must also be served on its own under its name, as grpcurl asks for those it
    # lacks: the first file of the answer is the one named.
    by_name = {}
    for name in sorted({d for f in files.values() for d in f.dependency}):
        response = ask(file_by_filename=name)
        if response.HasField("error_response"):
            by_name[name] = "error: " + response.error_response.error_message
        else:
            first = response.file_descriptor_response.file_descriptor_proto[0]
            by_name[name] = descriptor_pb2.FileDescriptorProto.FromString(first).name

    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added or name not in files:
            return
        for dep in files[name].dependency:
            add(dep)
        pool.Add(files[name])
        added.add(name)

    for name in sorted(files):
        add(name)

    service = pool.FindServiceByName(SERVICE)
    methods = [m.name for m in service.methods]
    list_tasks = service.FindMethodByName("ListTasks")
    request_class = message_class(pool, list_tasks.input_type.full_name)
    response_class = message_class(pool, list_tasks.output_type.full_name)
    call = channel.unary_unary(
        f"/{SERVICE}/ListTasks",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    response = call(
        request_class(page_size=10),
        metadata=[("authorization", "Bearer " + os.environ["CITADEL_API_KEY"])],
        timeout=10,
    )
    listed = json_format.MessageToDict(response)
    print(
        json.dumps(
            {
                "services": services,
                "files": sorted(files),
                "by_filename": by_filename,
                "by_name": by_name,
                "errors": errors,
                "methods": methods,
                "list_tasks_input": list_tasks.input_type.full_name,
                "input_fields": [f.name for f in list_tasks.input_type.fields],
                "tasks": listed.get("tasks", []),
            }
        )
    )


if __name__ == "__main__":
    main()

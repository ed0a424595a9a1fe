"""A generic gRPC client that knows nothing of dbmazz: it discovers the services and
message types through server reflection (grpcio-reflection) and calls every rpc.

usage: reflect_client.py HOST:PORT TOKEN
Prints one JSON object with the services found and each call's result or error code.
"""
import json
import sys

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.json_format import MessageToDict
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

addr, token = sys.argv[1], sys.argv[2]
channel = grpc.insecure_channel(addr)
db = ProtoReflectionDescriptorDatabase(channel)
pool = DescriptorPool(db)
out = {"services": sorted(db.get_services())}


def message_class(desc):
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


def call(service, method, tok=None, stream_count=0, body=None):
    md = pool.FindServiceByName(service).FindMethodByName(method)
    req_cls, resp_cls = message_class(md.input_type), message_class(md.output_type)
    req = req_cls(**(body or {}))
    path = "/%s/%s" % (service, method)
    metadata = [("authorization", "Bearer " + tok)] if tok else None
    try:
        if stream_count:
            fn = channel.unary_stream(path, request_serializer=req_cls.SerializeToString,
                                      response_deserializer=resp_cls.FromString)
            msgs = []
            it = fn(req, metadata=metadata, timeout=10)
            for m in it:
                msgs.append(MessageToDict(m, preserving_proto_field_name=True))
                if len(msgs) >= stream_count:
                    it.cancel()
                    break
            return {"ok": msgs}
        fn = channel.unary_unary(path, request_serializer=req_cls.SerializeToString,
                                 response_deserializer=resp_cls.FromString)
        resp = fn(req, metadata=metadata, timeout=10)
        return {"ok": MessageToDict(resp, preserving_proto_field_name=True)}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}


out["health"] = call("dbmazz.v1.Health", "Check")
out["status"] = call("dbmazz.v1.Status", "Get")
out["watch"] = call("dbmazz.v1.Status", "Watch", stream_count=2, body={"interval_ms": 100})
out["pause_no_token"] = call("dbmazz.v1.Control", "Pause")
out["pause_wrong_token"] = call("dbmazz.v1.Control", "Pause", tok="nope")
out["pause"] = call("dbmazz.v1.Control", "Pause", tok=token)
out["resume"] = call("dbmazz.v1.Control", "Resume", tok=token)
out["drain"] = call("dbmazz.v1.Control", "DrainAndStop", tok=token)
out["stop"] = call("dbmazz.v1.Control", "Stop", tok=token)
print(json.dumps(out))

"""A gRPC interop client for grpc.testing.TestService, written from gRPC's
interop test descriptions (doc/interop-test-descriptions.md), with grpcio.

usage: testservice_client.py [--ca CA.pem] HOST:PORT DESCRIPTOR_SET [CASE...]

With --ca the channel is TLS, trusting CA.pem, for a certificate naming localhost.

DESCRIPTOR_SET is the compiled schema (protoserve check --descriptor-set-out);
messages are built from it at run time, so no generated code is needed.
Runs every case (or the ones named) and prints "CASE: ok" for each; exits 1
after printing "CASE: FAILED ..." for the first that fails.
"""
import queue
import sys
import threading

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SVC = "/grpc.testing.TestService/"


class Schema:
    def __init__(self, path):
        with open(path, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        self.pool = descriptor_pool.DescriptorPool()
        for fd in fds.file:
            self.pool.Add(fd)

    def __getattr__(self, name):
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName("grpc.testing." + name))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


class Client:
    def __init__(self, target, schema, ca=None):
        self.m = schema
        if ca is None:
            self.channel = grpc.insecure_channel(target)
        else:
            with open(ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            self.channel = grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")])

    def unary(self, method, req_type, resp_type):
        return self.channel.unary_unary(
            SVC + method, request_serializer=req_type.SerializeToString, response_deserializer=resp_type.FromString
        )

    def server_stream(self, method, req_type, resp_type):
        return self.channel.unary_stream(
            SVC + method, request_serializer=req_type.SerializeToString, response_deserializer=resp_type.FromString
        )

    def client_stream(self, method, req_type, resp_type):
        return self.channel.stream_unary(
            SVC + method, request_serializer=req_type.SerializeToString, response_deserializer=resp_type.FromString
        )

    def bidi(self, method, req_type, resp_type):
        return self.channel.stream_stream(
            SVC + method, request_serializer=req_type.SerializeToString, response_deserializer=resp_type.FromString
        )

    def payload(self, size):
        return self.m.Payload(body=b"\0" * size)

    def simple(self, **kw):
        return self.m.SimpleRequest(**kw)

    def unary_call(self):
        return self.unary("UnaryCall", self.m.SimpleRequest, self.m.SimpleResponse)

    def full_duplex(self):
        return self.bidi("FullDuplexCall", self.m.StreamingOutputCallRequest, self.m.StreamingOutputCallResponse)

    def streaming_input(self):
        return self.client_stream("StreamingInputCall", self.m.StreamingInputCallRequest, self.m.StreamingInputCallResponse)

    def out_request(self, sizes, payload=None, **kw):
        params = [self.m.ResponseParameters(size=s) for s in sizes]
        req = self.m.StreamingOutputCallRequest(response_parameters=params, **kw)
        if payload is not None:
            req.payload.CopyFrom(self.payload(payload))
        return req

    # The cases, named as in the descriptions.

    def empty_unary(self):
        empty = self.m.Empty
        reply = self.unary("EmptyCall", empty, empty)(empty())
        check(reply.ByteSize() == 0, "EmptyCall answered a non-empty message")

    def large_unary(self):
        reply = self.unary_call()(self.simple(response_size=314159, payload=self.payload(271828)))
        check(len(reply.payload.body) == 314159, "payload size %d" % len(reply.payload.body))
        check(reply.payload.body == b"\0" * 314159, "payload is not zeros")

    def client_streaming(self):
        sizes = [27182, 8, 1828, 45904]
        reqs = (self.m.StreamingInputCallRequest(payload=self.payload(n)) for n in sizes)
        reply = self.streaming_input()(reqs)
        check(reply.aggregated_payload_size == 74922, "aggregated %d" % reply.aggregated_payload_size)

    def server_streaming(self):
        sizes = [31415, 9, 2653, 58979]
        call = self.server_stream("StreamingOutputCall", self.m.StreamingOutputCallRequest, self.m.StreamingOutputCallResponse)
        got = [len(r.payload.body) for r in call(self.out_request(sizes))]
        check(got == sizes, "sizes %r" % got)

    def ping_pong(self):
        pairs = [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]
        requests = queue.Queue()

        def gen():
            while True:
                r = requests.get()
                if r is None:
                    return
                yield r

        call = self.full_duplex()(gen())
        for size, body in pairs:
            requests.put(self.out_request([size], payload=body))
            reply = next(call)
            check(len(reply.payload.body) == size, "reply size %d, wanted %d" % (len(reply.payload.body), size))
        requests.put(None)
        check(next(call, None) is None, "more replies after the last request")
        check(call.code() == grpc.StatusCode.OK, "status %s" % call.code())

    def empty_stream(self):
        replies = list(self.full_duplex()(iter([])))
        check(replies == [], "replies to an empty stream")

    def timeout_on_sleeping_server(self):
        requests = queue.Queue()

        def gen():
            yield self.out_request([], payload=27182)
            requests.get()  # never returns: the deadline ends the call

        call = self.full_duplex()(gen(), timeout=0.001)
        try:
            for _ in call:
                pass
            raise AssertionError("no deadline error")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "status %s" % e.code())
        finally:
            requests.put(None)

    def cancel_after_begin(self):
        requests = queue.Queue()

        def gen():
            requests.get()
            return
            yield  # a generator that sends nothing

        future = self.streaming_input().future(gen())
        future.cancel()
        requests.put(None)
        check(future.cancelled(), "the call was not cancelled")
        try:
            future.result()
            raise AssertionError("a cancelled call returned")
        except grpc.FutureCancelledError:
            pass

    def cancel_after_first_response(self):
        requests = queue.Queue()

        def gen():
            yield self.out_request([31415], payload=27182)
            requests.get()

        call = self.full_duplex()(gen())
        reply = next(call)
        check(len(reply.payload.body) == 31415, "first reply size")
        call.cancel()
        requests.put(None)
        check(call.code() == grpc.StatusCode.CANCELLED, "status %s" % call.code())

    def custom_metadata(self):
        initial = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
        trailing = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")
        reply, call = self.unary_call().with_call(
            self.simple(response_size=314159, payload=self.payload(271828)), metadata=[initial, trailing]
        )
        check(len(reply.payload.body) == 314159, "payload size")
        check(initial in list(call.initial_metadata()), "initial metadata %r" % (call.initial_metadata(),))
        check(trailing in list(call.trailing_metadata()), "trailing metadata %r" % (call.trailing_metadata(),))

        call = self.full_duplex()(iter([self.out_request([314159], payload=271828)]), metadata=[initial, trailing])
        replies = list(call)
        check(len(replies) == 1 and len(replies[0].payload.body) == 314159, "duplex replies")
        check(initial in list(call.initial_metadata()), "duplex initial metadata %r" % (call.initial_metadata(),))
        check(trailing in list(call.trailing_metadata()), "duplex trailing metadata %r" % (call.trailing_metadata(),))

    def _status_roundtrip(self, code, text):
        status = self.m.EchoStatus(code=code, message=text)
        try:
            self.unary_call()(self.simple(response_status=status))
            raise AssertionError("UnaryCall succeeded")
        except grpc.RpcError as e:
            check(e.code().value[0] == code, "unary status %s" % e.code())
            check(e.details() == text, "unary message %r" % e.details())
        call = self.full_duplex()(iter([self.out_request([], response_status=status)]))
        try:
            list(call)
            raise AssertionError("FullDuplexCall succeeded")
        except grpc.RpcError as e:
            check(e.code().value[0] == code, "duplex status %s" % e.code())
            check(e.details() == text, "duplex message %r" % e.details())

    def status_code_and_message(self):
        self._status_roundtrip(2, "test status message")

    def special_status_message(self):
        self._status_roundtrip(2, "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n")

    def unimplemented_method(self):
        empty = self.m.Empty
        try:
            self.unary("UnimplementedCall", empty, empty)(empty())
            raise AssertionError("UnimplementedCall succeeded")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNIMPLEMENTED, "status %s" % e.code())

    def unimplemented_service(self):
        empty = self.m.Empty
        call = self.channel.unary_unary(
            "/grpc.testing.UnimplementedService/UnimplementedCall",
            request_serializer=empty.SerializeToString,
            response_deserializer=empty.FromString,
        )
        try:
            call(empty())
            raise AssertionError("UnimplementedService succeeded")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNIMPLEMENTED, "status %s" % e.code())

    def client_compressed_unary(self):
        def req(expect):
            return self.simple(
                response_size=314159, payload=self.payload(271828), expect_compressed=self.m.BoolValue(value=expect)
            )

        # The probe: an uncompressed request that claims to be compressed is refused.
        try:
            self.unary_call()(req(True))
            raise AssertionError("the server did not check expect_compressed")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "probe status %s" % e.code())
        reply = self.unary_call()(req(True), compression=grpc.Compression.Gzip)
        check(len(reply.payload.body) == 314159, "compressed request reply size")
        reply = self.unary_call()(req(False))
        check(len(reply.payload.body) == 314159, "uncompressed request reply size")

    def server_compressed_unary(self):
        for compressed in (True, False):
            reply = self.unary_call()(
                self.simple(
                    response_size=314159,
                    payload=self.payload(271828),
                    response_compressed=self.m.BoolValue(value=compressed),
                )
            )
            check(len(reply.payload.body) == 314159, "reply size (compressed=%s)" % compressed)

    def client_compressed_streaming(self):
        # grpcio compresses a whole call; the per-message case is covered by the Rust tests.
        try:
            self.streaming_input()(
                iter([self.m.StreamingInputCallRequest(payload=self.payload(27182), expect_compressed=self.m.BoolValue(value=True))])
            )
            raise AssertionError("the server did not check expect_compressed")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "probe status %s" % e.code())
        reqs = [
            self.m.StreamingInputCallRequest(payload=self.payload(27182), expect_compressed=self.m.BoolValue(value=True)),
            self.m.StreamingInputCallRequest(payload=self.payload(45904), expect_compressed=self.m.BoolValue(value=True)),
        ]
        reply = self.streaming_input()(iter(reqs), compression=grpc.Compression.Gzip)
        check(reply.aggregated_payload_size == 73086, "aggregated %d" % reply.aggregated_payload_size)

    def server_compressed_streaming(self):
        params = [
            self.m.ResponseParameters(size=31415, compressed=self.m.BoolValue(value=True)),
            self.m.ResponseParameters(size=92653, compressed=self.m.BoolValue(value=False)),
        ]
        call = self.server_stream("StreamingOutputCall", self.m.StreamingOutputCallRequest, self.m.StreamingOutputCallResponse)
        got = [len(r.payload.body) for r in call(self.m.StreamingOutputCallRequest(response_parameters=params))]
        check(got == [31415, 92653], "sizes %r" % got)


CASES = [
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "timeout_on_sleeping_server",
    "cancel_after_begin",
    "cancel_after_first_response",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_compressed_streaming",
    "server_compressed_streaming",
]


def main():
    args = sys.argv[1:]
    ca = None
    if args[:1] == ["--ca"]:
        ca, args = args[1], args[2:]
    target, schema = args[0], Schema(args[1])
    cases = args[2:] or CASES
    client = Client(target, schema, ca)
    for case in cases:
        try:
            getattr(client, case)()
        except Exception as e:  # report which case failed, then stop
            print("%s: FAILED %s: %s" % (case, type(e).__name__, e), flush=True)
            sys.exit(1)
        print("%s: ok" % case, flush=True)


if __name__ == "__main__":
    main()

"""grpcio decodes a stub's error details: google.rpc.Status from grpc-status-details-bin.

Usage: stub_errors.py HOST:PORT DIR_WITH_GENERATED_google_rpc
"""
import sys

import grpc

sys.path.insert(0, sys.argv[2])
from google.rpc import error_details_pb2, status_pb2  # noqa: E402


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    get_user = channel.unary_unary(
        "/users.UserService/GetUser",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    # users.GetUserRequest{user_id: "admin-7"}: field 1, length-delimited.
    request = b"\x0a\x07admin-7"
    try:
        get_user(request, timeout=10)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e.code()
        assert e.details() == "admins are not listed", e.details()
        raw = dict(e.trailing_metadata())["grpc-status-details-bin"]
        status = status_pb2.Status.FromString(raw)
        assert status.code == grpc.StatusCode.PERMISSION_DENIED.value[0], status.code
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info), status.details[0].type_url
        assert (info.reason, info.domain) == ("PRIVATE_USER", "users.example.com"), info
        print("stub errors: ok")
        return
    raise AssertionError("GetUser(admin-7) succeeded; the stub should have refused it")


if __name__ == "__main__":
    main()

"""Connects to protoserve over TLS with grpcio and asks grpc.health.v1.Health/Check.

usage: tls_client.py HOST:PORT CA.pem [CLIENT.pem CLIENT.key]

Prints "tls: SERVING" when served, "tls: refused CODE" when the call fails
(e.g. no client certificate for a server that requires one). The request and
reply are raw protobuf bytes: an empty HealthCheckRequest asks about the whole
server, and field 1 (status) = 1 is SERVING.
"""
import sys

import grpc


def main():
    target, ca = sys.argv[1], sys.argv[2]
    with open(ca, "rb") as f:
        root = f.read()
    key = chain = None
    if len(sys.argv) > 4:
        with open(sys.argv[3], "rb") as f:
            chain = f.read()
        with open(sys.argv[4], "rb") as f:
            key = f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(target, creds, options=options) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            reply = check(b"", timeout=10)
        except grpc.RpcError as e:
            print("tls: refused", e.code().name)
            return
        print("tls: SERVING" if reply == b"\x08\x01" else "tls: unexpected reply %r" % reply)


if __name__ == "__main__":
    main()

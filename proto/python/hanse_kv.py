#!/usr/bin/env python3
"""A minimal Hanse client in Python, generated from the public contract hanse/v1/kv.proto.

Generate the stubs once, then use it:

    python -m grpc_tools.protoc -I proto --python_out=gen --grpc_python_out=gen proto/hanse/v1/kv.proto
    PYTHONPATH=gen python proto/python/hanse_kv.py --certs-dir C/certs --endpoints 127.0.0.11:7400 put city Hamburg
    PYTHONPATH=gen python proto/python/hanse_kv.py --certs-dir C/certs --endpoints 127.0.0.11:7400 get city

Nodes serve TLS and want a client certificate of the cluster's CA: --certs-dir names the
directory with ca.crt and client-USER.crt/.key (`hanse cert create-client --user USER`;
a local cluster has them in its DIR/certs). --insecure talks plaintext to nodes that run
`insecure = true`.

A request that reaches a follower is answered NotLeader with the leader's address; the
client retries there, as every Hanse client does.
"""

import argparse
import sys
import time

import grpc

from hanse.v1 import kv_pb2, kv_pb2_grpc

DEADLINE_S = 10.0


def credentials(certs_dir, user):
    """TLS with the user's certificate, trusting only the cluster's CA."""
    def read(name):
        with open(f"{certs_dir}/{name}", "rb") as f:
            return f.read()
    return grpc.ssl_channel_credentials(
        root_certificates=read("ca.crt"),
        private_key=read(f"client-{user}.key"),
        certificate_chain=read(f"client-{user}.crt"),
    )


def open_channel(endpoint, creds):
    if creds is None:
        return grpc.insecure_channel(endpoint)
    return grpc.secure_channel(endpoint, creds)


def call(endpoints, creds, method, request):
    """Sends `request` until a node serves it, following NotLeader hints."""
    deadline = time.monotonic() + DEADLINE_S
    candidates = list(endpoints)
    attempt = 0
    last = "no attempt"
    while time.monotonic() < deadline:
        endpoint = candidates[attempt % len(candidates)]
        attempt += 1
        try:
            with open_channel(endpoint, creds) as channel:
                stub = kv_pb2_grpc.KvStub(channel)
                response = getattr(stub, method)(request, timeout=DEADLINE_S)
        except grpc.RpcError as e:
            last = f"{endpoint}: {e.code().name}"
            time.sleep(0.1)
            continue
        if not response.HasField("error"):
            return response
        kind = response.error.WhichOneof("kind")
        if kind == "not_leader" and response.error.not_leader.leader_addr:
            leader = response.error.not_leader.leader_addr
            candidates.insert(attempt % (len(candidates) + 1), leader)
            last = f"{endpoint}: not the leader, try {leader}"
            continue
        if kind == "invalid_argument":
            raise ValueError(response.error.invalid_argument.message)
        last = f"{endpoint}: {kind}"
        time.sleep(0.1)
    raise TimeoutError(f"no node served the request within {DEADLINE_S}s; last: {last}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", required=True, help="HOST:PORT,... of any nodes")
    parser.add_argument("--certs-dir", help="ca.crt and client-USER.crt/.key")
    parser.add_argument("--user", default="root", help="whose certificate to present")
    parser.add_argument("--insecure", action="store_true", help="plaintext, no certificate")
    sub = parser.add_subparsers(dest="op", required=True)
    put = sub.add_parser("put")
    put.add_argument("key")
    put.add_argument("value")
    get = sub.add_parser("get")
    get.add_argument("key")
    args = parser.parse_args()
    endpoints = args.endpoints.split(",")
    if args.insecure == bool(args.certs_dir):
        parser.error("give --certs-dir DIR (TLS) or --insecure (plaintext)")
    creds = None if args.insecure else credentials(args.certs_dir, args.user)
    if args.op == "put":
        call(endpoints, creds, "Put", kv_pb2.PutRequest(key=args.key.encode(), value=args.value.encode()))
        return 0
    response = call(endpoints, creds, "Get", kv_pb2.GetRequest(key=args.key.encode()))
    if not response.found:
        print("not found", file=sys.stderr)
        return 1
    sys.stdout.write(response.value.decode(errors="replace") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

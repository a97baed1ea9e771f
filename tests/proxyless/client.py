"""A proxyless gRPC client: resolves xds:///TARGET through the control plane and counts
which backend answered each call.

Usage: client.py TARGET CALLS  (GRPC_XDS_BOOTSTRAP or GRPC_XDS_BOOTSTRAP_CONFIG must be set)
Prints one JSON object: {"backend-name": count, ..., "errors": [first few error strings]}.
"""
import collections
import json
import sys

import grpc

target, calls = sys.argv[1], int(sys.argv[2])
channel = grpc.insecure_channel(f"xds:///{target}")
say = channel.unary_unary("/echo.Echo/Say")
counts = collections.Counter()
errors = []
for _ in range(calls):
    try:
        counts[say(b"hi", timeout=10).decode()] += 1
    except grpc.RpcError as e:  # keep going: the test judges the totals
        counts["errors"] += 1
        if len(errors) < 3:
            errors.append(f"{e.code()}: {e.details()[:200]}")
result = dict(counts)
result["error_details"] = errors
print(json.dumps(result), flush=True)

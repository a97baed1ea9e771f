"""A gRPC backend for the proxyless xDS test: answers /echo.Echo/Say with its own name.

Usage: backend.py NAME  — binds 127.0.0.1:0 and prints "listening PORT" once serving.
No .proto is needed: the handler is generic and works on raw bytes.
"""
import sys
from concurrent import futures

import grpc

name = sys.argv[1]


def say(_request, _context):
    return name.encode()


handler = grpc.method_handlers_generic_handler(
    "echo.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
)
server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"listening {port}", flush=True)
server.wait_for_termination()

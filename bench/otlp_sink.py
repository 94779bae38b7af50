"""An OTLP/gRPC trace receiver that counts the spans it is sent and keeps none: the collector
the traced targets of ``router.py --tracing`` export to.

    python bench/otlp_sink.py --port 4317     # prints the spans received, every 10 s
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as ts_grpc


class Sink(ts_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0

    async def Export(
        self, request: ts.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> ts.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans += len(scope.spans)
        return ts.ExportTraceServiceResponse()


async def serve(port: int) -> None:
    sink = Sink()
    server = grpc.aio.server()
    ts_grpc.add_TraceServiceServicer_to_server(sink, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    while True:
        await asyncio.sleep(10)
        print(f"spans received: {sink.spans}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()

"""The grpc.aio shell of the worker."""

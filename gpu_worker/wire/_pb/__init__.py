"""Generated gRPC stubs (scripts/gen_protos). Do not edit."""

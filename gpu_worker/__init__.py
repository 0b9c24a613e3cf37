"""Tether's model worker: a gRPC service that runs an engine and keeps a KV/prefix cache per chain.

Layout:
  wire/      the contract shared with api_box: generated stubs, tokenizer, chat format, chain digest
  client/    the async client api_box uses (the only part of gpu_worker api_box may import, with wire/)
  core/      pure: cache policy, request validation, timing model, agent policy
  engines/   the Engine protocol and its implementations (sim, torch)
  server/    the grpc.aio shell: servicer, one error map, health, graceful shutdown
"""

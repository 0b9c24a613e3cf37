"""The box <-> worker contract: what both sides must agree on byte for byte.

- `_pb`: generated gRPC stubs of `gpu_worker/proto/worker.proto`.
- `tokenizer`: the one tokenizer every engine and the box use, so usage numbers agree everywhere.
- `chat`: how Responses items render to tokens (the chat format).
- `chain`: the block-folded digest of a token chain.
"""

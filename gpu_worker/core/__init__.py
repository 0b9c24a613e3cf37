"""Pure cores of the worker: cache policy, request validation, timing model, agent policy. No I/O."""

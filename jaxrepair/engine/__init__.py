"""The rollout engine: the accelerator-side generation service RL and evaluation drive.

`api` holds the typed contract every engine implements (requests, completions, streamed
events, the `RolloutEngine` protocol); `jax_engine` is ours (own weights and mesh, paged KV
cache with prefix reuse, continuous batching); `server` puts any engine behind an
OpenAI-compatible HTTP endpoint.
"""

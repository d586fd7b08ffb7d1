"""The rollout engine: the accelerator-side generation service RL and evaluation drive.

- `api`: the typed contract every engine implements (requests, completions, streamed events,
  the `RolloutEngine` protocol);
- `jax_engine`: ours (own weights and mesh, continuous batching), on `paged_model` (Qwen3
  over a paged KV cache) and `blocks` (block allocation and prefix reuse);
- `vllm_engine`: the same contract over vLLM, for users who generate with it;
- `server` and `openai_schema`: any engine behind an OpenAI-compatible HTTP endpoint.
"""

"""LLM backends for agents and judges: an OpenAI-compatible endpoint, a local HF chat model, offline."""

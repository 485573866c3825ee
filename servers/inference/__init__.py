"""Inference server: local models through Ollama or OpenAI-compatible engines."""

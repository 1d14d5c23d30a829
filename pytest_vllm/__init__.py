"""pytest-vllm: decide whether a vLLM deployment may go to production."""

__version__ = "0.1.0"

"""zlora: Zipper-LoRA and related multilingual LoRA methods for Speech-LLM ASR."""
__version__ = "0.1.0"

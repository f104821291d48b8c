"""Speech-LLM model: Whisper encoder -> gated conv projector -> decoder-only LLM (paper §III-A).

Public API::

    from zlora.models import (SpeechLLMConfig, EncoderConfig, ProjectorConfig, LLMConfig,
                              LLMLoRAConfig, build_speech_llm, SpeechLLM, DecodingOptions)
"""
from zlora.models.config import (DEFAULT_ENCODER_ADAPTER_TARGETS, DEFAULT_LLM_LORA_TARGETS,
                                 EncoderConfig, LLMConfig, LLMLoRAConfig, ProjectorConfig,
                                 SpeechLLMConfig)
from zlora.models.generation import DecodingOptions
from zlora.models.speech_llm import SpeechLLM, build_speech_llm

__all__ = [
    "DEFAULT_ENCODER_ADAPTER_TARGETS", "DEFAULT_LLM_LORA_TARGETS", "DecodingOptions",
    "EncoderConfig", "LLMConfig", "LLMLoRAConfig", "ProjectorConfig", "SpeechLLM",
    "SpeechLLMConfig", "build_speech_llm",
]

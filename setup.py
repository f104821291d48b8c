"""zlora: Zipper-LoRA and friends for multilingual Speech-LLM ASR."""
from setuptools import find_packages, setup

# torch is declared as a range that the CPU wheel 2.13.0 satisfies: tools/install.sh
# installs torch==2.13.0 first, so pip never pulls a multi-GB CUDA build here.
INSTALL_REQUIRES = [
    "torch>=2.4",
    "transformers>=5.24,<6",      # tested: tools/constraints.txt pins the exact versions
    "safetensors",
    "sentencepiece",
    "kaldiio",
    "jiwer",
    "pyyaml",
    "tqdm",
    "soundfile",
    "numpy",
    "scipy",
    "whisper-normalizer",
]
EXTRAS = {
    "deepspeed": ["deepspeed>=0.19.8"],
    "mini12": ["num2words", "wordfreq", "Babel"],
    "convert": ["gguf", "accelerate"],
    "plot": ["matplotlib", "scikit-learn"],
    "tensorboard": ["tensorboard"],
    "test": ["pytest", "peft"],
}
EXTRAS["all"] = sorted({p for v in EXTRAS.values() for p in v})

setup(
    name="zlora",
    version="0.1.0",
    description="Zipper-LoRA: rank-level shared/language-specific LoRA for multilingual Speech-LLM ASR",
    packages=find_packages(include=["zlora", "zlora.*"]),
    package_data={"zlora": ["resources/*"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)

"""zlora.config_help: ``--help`` of typed-config verbs lists every key (dotted), its type, default and
the meaning written next to the field in the dataclass source."""
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from zlora.config import ConfigError, load_config, parse_overrides
from zlora.config_help import config_help, config_keys, field_comments


@dataclass
class Sub:
    """A nested section.

    - ``gamma``: documented in the docstring only.
    - ``beta_*``: every beta key without a comment of its own.
    """
    rank: int = 8                      # adapter rank
    gamma: float = 0.5
    beta_one: int = 1
    beta_two: int = 2                  # the second beta


@dataclass
class Item:
    name: str                          # one entry of a list


@dataclass
class Demo:
    out: str                           # output dir
    # Leading comment, first line,
    # and its second line.
    lr: float = 2e-5
    mode: Literal["fast", "slow"] = "fast"   # how to run
    langs: list[str] = field(default_factory=lambda: ["en", "fr"])
    long: Optional[str] = None         # a trailing comment that goes on
    #                                    on the next line, aligned with it
    # This block belongs to `after`, not to `long`.
    after: int = 3
    sub: Sub = field(default_factory=lambda: Sub(rank=32))
    maybe: Optional[Sub] = None        # an optional section
    items: list[Item] = field(default_factory=list)
    bare: bool = False


def test_field_comments_leading_trailing_and_continued():
    c = field_comments(Demo)
    assert c["out"] == "output dir"
    assert c["lr"] == "Leading comment, first line, and its second line."
    assert c["mode"] == "how to run"
    assert c["long"] == "a trailing comment that goes on on the next line, aligned with it"
    assert c["after"] == "This block belongs to `after`, not to `long`."
    assert c["bare"] == "" and c["langs"] == ""


def test_keys_types_defaults_and_meanings():
    keys = {k.name: k for k in config_keys(Demo)}
    assert (keys["out"].type, keys["out"].default) == ("str", None)            # required
    assert (keys["lr"].type, keys["lr"].default) == ("float", "2.0e-05")
    assert keys["mode"].type == "{fast,slow}" and keys["mode"].default == "fast"
    assert keys["langs"].default == "[en, fr]" and keys["long"].type == "str | null"
    # a section's keys take their defaults from the section's own default instance
    assert keys["sub.rank"].default == "32" and keys["sub.rank"].meaning == "adapter rank"
    assert keys["sub"].section and keys["sub"].meaning == "A nested section."
    assert keys["sub.gamma"].meaning == "documented in the docstring only."
    assert keys["sub.beta_one"].meaning == "every beta key without a comment of its own."
    assert keys["sub.beta_two"].meaning == "the second beta"
    assert keys["maybe"].section and keys["maybe"].default == "null" and keys["maybe.rank"].default == "8"
    assert keys["items[].name"].meaning == "one entry of a list"


def test_help_text_lists_dotted_keys_with_type_default_and_meaning():
    text = config_help(Demo)
    assert "  --out  str, required\n      output dir\n" in text
    assert "  --sub.rank  int, default 32\n      adapter rank\n" in text
    assert "  maybe.*  optional section Sub, default null\n" in text
    assert "  items[].name  str, required (YAML only)\n" in text
    assert "--config FILE.yaml" in text and "-h, --help" in text


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_flag_prints_the_keys_and_exits_0(flag, capsys):
    with pytest.raises(SystemExit) as e:
        load_config(Demo, ["--out", "x", flag, "--lr", "1"], description="Demo tool.")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "\nDemo tool.\n" in out and "--mode  {fast,slow}, default fast" in out


def test_unknown_keys_still_fail_and_help_is_not_a_key():
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(Demo, ["--out", "x", "--lrr", "1"])
    with pytest.raises(SystemExit):
        parse_overrides(["--help"])                   # no dataclass: the syntax alone


def test_train_help_documents_every_key():
    """The training config (zlora/train/config.py and the sections it nests) explains every key."""
    from zlora.train.config import TrainConfig

    keys = {k.name: k for k in config_keys(TrainConfig)}
    assert not [name for name, k in keys.items() if not k.meaning]
    assert (keys["optim.lr"].type, keys["optim.lr"].default) == ("float", "2.0e-05")
    assert keys["optim.max_steps"].default == "1000"          # from TrainConfig's OptimConfig(max_steps=1000)
    assert keys["engine.bf16"].type == "bool | null" and "float32 on CPU" in keys["engine.bf16"].meaning
    assert keys["model.encoder.chunked"].meaning == "§IV-F segment-wise encoding"
    assert keys["adapter"].section and "zlora.adapters.registry" in keys["adapter.kind"].meaning


@pytest.mark.parametrize("where, name", [("zlora.bin.dump_feats", "DumpFeatsConfig"),
                                         ("zlora.data.synth", "SynthConfig")])
def test_other_typed_configs_document_every_key(where, name):
    import importlib

    cls = getattr(importlib.import_module(where), name)
    assert not [k.name for k in config_keys(cls) if not k.meaning]

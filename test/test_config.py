from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from zlora.config import ConfigError, from_dict, load_config, parse_overrides, save_config, read_yaml


@dataclass
class Inner:
    rank: int = 8
    alpha: float = 16.0
    kind: Literal["lora", "zipper-soft"] = "lora"


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    langs: list[str] = field(default_factory=list)
    init_from: Optional[str] = None
    flag: bool = False


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"config.inner: unknown key\(s\) 'rnak'"):
        from_dict(Outer, {"name": "x", "inner": {"rnak": 4}})


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError, match=r"config.name: required key is missing"):
        from_dict(Outer, {})


@pytest.mark.parametrize("data, where", [
    ({"name": "x", "inner": {"rank": "8"}}, "config.inner.rank"),
    ({"name": "x", "flag": "yes"}, "config.flag"),
    ({"name": "x", "langs": "en"}, "config.langs"),
    ({"name": "x", "inner": {"kind": "zipper"}}, "config.inner.kind"),
])
def test_wrong_type_is_named(data, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        from_dict(Outer, data)


def test_int_is_accepted_for_float_and_types_survive():
    cfg = from_dict(Outer, {"name": "x", "inner": {"alpha": 64}, "langs": ["en", "fr"]})
    assert cfg.inner.alpha == 64.0 and isinstance(cfg.inner.alpha, float)
    assert cfg.langs == ["en", "fr"] and cfg.init_from is None


def test_exponent_without_dot_is_a_float(tmp_path):
    # YAML 1.1 (PyYAML) reads 2e-3 as the string "2e-3"; users write it so on the command line.
    p = tmp_path / "c.yaml"
    p.write_text("name: a\ninner:\n  alpha: 1e2\n")
    assert load_config(Outer, ["--config", str(p)]).inner.alpha == 100.0
    assert load_config(Outer, ["--config", str(p), "--inner.alpha", "2e-3"]).inner.alpha == 0.002
    with pytest.raises(ConfigError, match=r"inner\.alpha"):
        load_config(Outer, ["--config", str(p), "--inner.alpha", "2e-3x"])
    with pytest.raises(ConfigError, match=r"inner\.rank"):     # ints stay strict
        load_config(Outer, ["--config", str(p), "--inner.rank", "1e2"])


def test_cli_overrides_win_over_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\ninner:\n  rank: 4\n")
    cfg = load_config(Outer, ["--config", str(p), "--inner.rank", "32", "--flag=true",
                              "--langs", "[en, ja]", "--local_rank", "0"])
    assert (cfg.name, cfg.inner.rank, cfg.flag, cfg.langs) == ("a", 32, True, ["en", "ja"])


def test_override_typo_fails_and_names_the_command_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\n")
    with pytest.raises(ConfigError, match=r"^command line: --inner\.rnak: unknown key 'rnak'"):
        load_config(Outer, ["--config", str(p), "--inner.rnak", "3"])
    p.write_text("name: a\ninner: {rnak: 3}\n")          # the same typo in the file names the file
    with pytest.raises(ConfigError, match=r"c\.yaml\.inner: unknown key"):
        load_config(Outer, ["--config", str(p)])


def test_roundtrip_and_bad_yaml(tmp_path):
    cfg = from_dict(Outer, {"name": "a", "langs": ["en"]})
    save_config(cfg, tmp_path / "out.yaml")
    assert from_dict(Outer, read_yaml(tmp_path / "out.yaml")) == cfg
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        read_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "nope.yaml")


def test_parse_overrides_rejects_positional_and_dangling():
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse_overrides(["foo"])
    with pytest.raises(ConfigError, match="needs a value"):
        parse_overrides(["--a.b"])


def test_base_include_merges_and_detects_cycles(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\ninner:\n  rank: 4\n  alpha: 8\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.yaml").write_text("_base_: ../base.yaml\ninner:\n  rank: 16\n")
    cfg = load_config(Outer, ["--config", str(tmp_path / "sub" / "x.yaml")])
    assert (cfg.name, cfg.inner.rank, cfg.inner.alpha) == ("base", 16, 8.0)
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        read_yaml(tmp_path / "a.yaml")


@dataclass
class WithOptionalSection:
    inner: Optional[Inner] = None


def test_optional_section_errors_name_the_inner_key():
    with pytest.raises(ConfigError, match=r"config\.inner: unknown key\(s\) 'rnak'"):
        from_dict(WithOptionalSection, {"inner": {"rnak": 1}})
    assert from_dict(WithOptionalSection, {"inner": None}).inner is None

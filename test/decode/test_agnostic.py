"""Language-agnostic decoding (zlora/decode/agnostic.py, zlora/adapters/posterior.py)."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from models_testlib import LANGS, make_sp_model, random_batch, tiny_model  # noqa: E402

from zlora.adapters import AdapterConfig, language_context  # noqa: E402
from zlora.adapters.posterior import language_posterior_context  # noqa: E402
from zlora.decode.agnostic import lid_report, write_part_posteriors  # noqa: E402
from zlora.decode.sources import LANG_SOURCES, LanguageConfig, one_hot  # noqa: E402
from zlora.models import DecodingOptions  # noqa: E402

TARGET = r"layers\.(1|2)\.(self_attn\.(q_proj|v_proj)|fc1|fc2)"
OPTS = DecodingOptions(max_new_tokens=6)


def decode_batch(model, x, lens, mode, true_langs, **lang):
    """What zlora.bin.decode does for one batch: route by the source, then generate."""
    source = LANG_SOURCES.get(mode)(LanguageConfig(mode=mode, **lang), model)
    route = source.route(model, x, lens, [f"u{i}" for i in range(len(lens))], true_langs)
    with torch.inference_mode(), route.applied(model):
        return model.generate(x, lens, route.langs, OPTS), route.langs


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    return make_sp_model(tmp_path_factory.mktemp("sp"))


def _zipper(sp, kind="zipper-soft"):
    g = torch.Generator().manual_seed(3)
    lid = {c: torch.randn(6, generator=g) for c in LANGS}
    m = tiny_model(sp)
    m.set_stage(2, AdapterConfig.make(kind=kind, rank=4, alpha=8.0, languages=list(LANGS),
                                 target_modules=TARGET, lid_embeddings=lid))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "B_" in n or "lora_B" in n or "router" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m.eval()


@pytest.mark.parametrize("kind", ["zipper-soft", "zipper-hard"])
def test_one_hot_posterior_equals_known_language(sp, kind):
    model = _zipper(sp, kind)
    layer = model.encoder.get_submodule("layers.2.fc1")
    x = torch.randn(3, 7, layer.in_features)
    with torch.no_grad(), language_context(model.encoder, ["de", "en", "fr"]):
        known = layer(x)
        with language_posterior_context(model.encoder, one_hot(torch.tensor([2, 0, 1]), 3)):
            post = layer(x)
        with language_posterior_context(model.encoder, torch.full((3, 3), 1 / 3)):
            mixed = layer(x)
    torch.testing.assert_close(post, known)
    assert not torch.allclose(mixed, known)


@pytest.mark.parametrize("router_input", ["hard", "mixture"])
def test_oracle_decoding_equals_known_decoding(sp, router_input, tmp_path):
    model = _zipper(sp)
    b = random_batch([40, 28, 34], langs=[2, 0, 1])
    x, lens, langs = b["feats"], b["feat_lens"], b["lang_ids"]
    known = model.generate(x, lens, langs, OPTS)
    ids, used = decode_batch(model, x, lens, "oracle", langs, router_input=router_input)
    assert ids == known and used.tolist() == [2, 0, 1]
    # A detected (whisper_lid) posterior whose argmax is the truth also matches with `hard`.
    post = [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]
    write_part_posteriors(tmp_path, {f"u{i}": dict(zip(LANGS, row)) for i, row in enumerate(post)})
    ids, used = decode_batch(model, x, lens, "whisper_lid", langs, router_input="hard",
                             posteriors=str(tmp_path / "lid_posteriors.jsonl"))
    assert ids == known and used.tolist() == [2, 0, 1]
    wrong = torch.tensor([[1.0, 0.0, 0.0]] * 3)
    enc_known, _ = model.encode_speech(x, lens, langs)
    with language_posterior_context(model.encoder, wrong):
        enc_wrong, _ = model.encode_speech(x, lens, langs)
    assert not torch.allclose(enc_known, enc_wrong)


def test_mole_oracle_known_and_classifier(sp, tmp_path):
    from zlora.adapters.mole import MoLELayer

    m = tiny_model(sp)
    m.set_stage(2, AdapterConfig(kind="mole", rank=4, alpha=8.0, languages=list(LANGS), target_modules=TARGET,
                                 conf={"fused": r"layers\.1\..*", "lid_hidden": 8}))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for mod in m.encoder.modules():
            if isinstance(mod, MoLELayer):
                mod.expert_B.copy_(torch.randn(mod.expert_B.shape, generator=g))
        owner = next(mod for mod in m.encoder.modules() if isinstance(mod, MoLELayer))
        owner.lid_classifier.net[2].weight.zero_()
        owner.lid_classifier.net[2].bias.copy_(torch.tensor([0.0, 0.0, 9.0]))
    m.eval()
    b = random_batch([30, 26], langs=[2, 2])
    x, lens, langs = b["feats"], b["feat_lens"], b["lang_ids"]
    known, _ = decode_batch(m, x, lens, "known", langs)
    oracle, _ = decode_batch(m, x, lens, "oracle", langs)
    pred, used = decode_batch(m, x, lens, "mole", None)
    assert known == oracle == pred and used.tolist() == [2, 2]
    other, _ = decode_batch(m, x, lens, "known", torch.tensor([0, 0]))
    assert other != known


def test_lid_report(tmp_path):
    part = tmp_path / "split1" / "1"
    part.mkdir(parents=True)
    (part / "lid").write_text("a en\nb fr\nc en\n")
    rep = lid_report([part], {"a": "en", "b": "en", "c": "en"}, tmp_path, "whisper_lid")
    assert rep["accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    saved = json.loads((tmp_path / "lid.json").read_text())
    assert saved["per_language"]["en"] == {"utts": 3, "correct": 2, "accuracy": 0.6667,
                                           "predicted": {"en": 2, "fr": 1}}


def test_whisper_lid_reads_the_decodes_own_log_mel_without_lang_feats(tmp_path, monkeypatch):
    """No --lang.feats: Whisper gets each row of the decode's input cut to its length, exactly what
    it gets from a feats.scp holding the same matrices; a cached-layer model needs --lang.feats."""
    import types

    import kaldiio
    import numpy as np

    import zlora.decode.agnostic as agnostic
    from zlora.utils.cli import UserError

    got = []
    monkeypatch.setattr(agnostic, "whisper_posteriors",
                        lambda whisper, mels, langs: got.append(mels) or torch.eye(len(langs))[: len(mels)])
    model = types.SimpleNamespace(languages=list(LANGS), cfg=types.SimpleNamespace(
        encoder=types.SimpleNamespace(cached_layers=0, whisper_dir="w")))
    g = torch.Generator().manual_seed(0)
    mats = [torch.randn(n, 8, generator=g) for n in (7, 4)]
    x = torch.zeros(2, 7, 8)
    for i, m in enumerate(mats):
        x[i, : len(m)] = m
    lens = torch.tensor([7, 4])
    own = LANG_SOURCES.get("whisper_lid")(LanguageConfig(mode="whisper_lid"), model)
    own.route(model, x, lens, ["a", "b"], None)
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/m.ark,{tmp_path}/m.scp") as w:
        for u, m in zip("ab", mats):
            w(u, m.numpy().astype(np.float32))
    scp = LANG_SOURCES.get("whisper_lid")(LanguageConfig(mode="whisper_lid", feats=str(tmp_path / "m.scp")), model)
    scp.route(model, x, lens, ["a", "b"], None)
    assert [m.shape for m in got[0]] == [(7, 8), (4, 8)]
    assert all(torch.equal(a, b) for a, b in zip(got[0], got[1]))
    model.cfg.encoder.cached_layers = 4
    with pytest.raises(UserError, match="cached encoder states.*--lang.feats"):
        LANG_SOURCES.get("whisper_lid")(LanguageConfig(mode="whisper_lid"), model)

"""python -m zlora.bin.dump_encoder: cached bottom-layer states equal the model's own path."""
import kaldiio
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from models_testlib import TINY_WHISPER
from zlora.bin.dump_encoder import main
from zlora.config import from_dict
from zlora.models.config import EncoderConfig
from zlora.models.encoder import WhisperSpeechEncoder
from zlora.utils.cli import UserError


@pytest.fixture
def setup(tmp_path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    WhisperForConditionalGeneration(WhisperConfig(**TINY_WHISPER)).save_pretrained(tmp_path / "whisper")
    rng = np.random.default_rng(0)
    mats = {f"utt{i}": rng.standard_normal((n, 80)).astype(np.float32) for i, n in enumerate([57, 120, 33])}
    (tmp_path / "feats").mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/feats/feats.ark,{tmp_path}/feats/feats.scp") as w:
        for u in ["utt1", "utt0", "utt2"]:
            w(u, mats[u])
    return tmp_path, mats


def test_dump_encoder_writes_bottom_layer_states(setup):
    tmp, mats = setup
    out = tmp / "enc2"
    args = ["--whisper_dir", str(tmp / "whisper"), "--feats", str(tmp / "feats/feats.scp"),
            "--layers", "2", "--out", str(out), "--batch_size", "2"]
    assert main(args) == 0
    assert (out / ".done").is_file()
    cached = kaldiio.load_scp(str(out / "feats.scp"))
    assert list(cached) == ["utt0", "utt1", "utt2"]                       # sorted scp
    full = WhisperSpeechEncoder(from_dict(EncoderConfig, {"whisper_dir": str(tmp / "whisper")}, "e")).eval()
    top = WhisperSpeechEncoder(from_dict(EncoderConfig, {"whisper_dir": str(tmp / "whisper"),
                                                         "cached_layers": 2}, "e")).eval()
    for u, m in mats.items():
        h = cached[u]
        assert h.dtype == np.float32 and h.shape == ((m.shape[0] + 1) // 2, 32)
        with torch.no_grad():
            ref, _ = full(torch.from_numpy(m)[None], torch.tensor([m.shape[0]]))
            got, _ = top(torch.tensor(h)[None], torch.tensor([h.shape[0]]))
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (out / "utt2num_frames").read_text() == "utt0 29\nutt1 60\nutt2 17\n"
    meta = yaml.safe_load((out / "meta.yaml").read_text())
    assert meta["layers"] == 2 and meta["d_model"] == 32 and len(meta["fingerprint"]) == 64
    stamp = (out / "feats.ark").stat().st_mtime_ns
    assert main(args) == 0 and (out / "feats.ark").stat().st_mtime_ns == stamp       # kept
    # the log-mel dump is redone (new audio): the cache is stale and redone too
    new = {u: m[: m.shape[0] // 2] for u, m in mats.items()}
    with kaldiio.WriteHelper(f"ark,scp:{tmp}/feats/feats.ark,{tmp}/feats/feats.scp") as w:
        for u in ["utt0", "utt1", "utt2"]:
            w(u, new[u])
    assert main(args) == 0
    assert (out / "utt2num_frames").read_text() == "utt0 14\nutt1 30\nutt2 8\n"   # half the frames


def test_encoder_state_overlay_changes_the_cache_and_bad_input_fails(setup):
    tmp, mats = setup
    base = ["--whisper_dir", str(tmp / "whisper"), "--feats", str(tmp / "feats/feats.scp"), "--layers", "1"]
    main(base + ["--out", str(tmp / "a")])
    save_file({"encoder.conv1.bias": torch.ones(32), "projector.x": torch.zeros(1)}, str(tmp / "s1.safetensors"))
    main(base + ["--out", str(tmp / "b"), "--encoder_state", str(tmp / "s1.safetensors")])
    a, b = kaldiio.load_scp(str(tmp / "a/feats.scp")), kaldiio.load_scp(str(tmp / "b/feats.scp"))
    assert np.abs(a["utt0"] - b["utt0"]).max() > 1e-3
    with pytest.raises(UserError, match="--layers must be in 1..3"):
        main(base[:-1] + ["4", "--out", str(tmp / "c")])
    with kaldiio.WriteHelper(f"ark,scp:{tmp}/bad.ark,{tmp}/bad.scp") as w:
        w("u", np.zeros((10, 40), dtype=np.float32))
    with pytest.raises(UserError, match="utterance u has a matrix of shape"):
        main(["--whisper_dir", str(tmp / "whisper"), "--feats", str(tmp / "bad.scp"), "--layers", "1",
              "--out", str(tmp / "d")])
    assert not (tmp / "d" / ".done").exists() and not (tmp / "d" / "feats.scp").exists()


def test_two_layer_counts_in_one_pass_equal_separate_dumps(setup):
    tmp, _ = setup
    common = ["--whisper_dir", str(tmp / "whisper"), "--feats", str(tmp / "feats/feats.scp"), "--batch_size", "2"]
    assert main(common + ["--layers", "1", "2", "--out", str(tmp / "a1"), str(tmp / "a2")]) == 0
    assert main(common + ["--layers", "2", "--out", str(tmp / "b2")]) == 0
    one, sep = kaldiio.load_scp(str(tmp / "a2/feats.scp")), kaldiio.load_scp(str(tmp / "b2/feats.scp"))
    for u in sep:
        np.testing.assert_allclose(one[u], sep[u], atol=1e-6)
    assert yaml.safe_load((tmp / "a1/meta.yaml").read_text())["layers"] == 1
    with pytest.raises(UserError, match="one output dir per"):
        main(common + ["--layers", "1", "2", "--out", str(tmp / "c")])


def test_workers_write_the_same_cache_as_one_process(setup):
    import subprocess
    import sys

    tmp, _ = setup
    common = ["--whisper_dir", str(tmp / "whisper"), "--feats", str(tmp / "feats/feats.scp"), "--batch_size", "1"]
    assert main(common + ["--layers", "1", "2", "--out", str(tmp / "a1"), str(tmp / "a2")]) == 0
    (tmp / "w2").mkdir()
    (tmp / "w2/feats.ark").write_bytes(b"left by an older dump with --nj 1")
    # a fresh process, as in a recipe: it forks its workers before running any tensor op
    subprocess.run([sys.executable, "-m", "zlora.bin.dump_encoder", *common, "--nj", "2",
                    "--layers", "1", "2", "--out", str(tmp / "w1"), str(tmp / "w2")], check=True)
    assert sorted(p.name for p in (tmp / "w2").glob("*.ark")) == ["feats.1.ark", "feats.2.ark"]
    for n in ("1", "2"):
        one, two = kaldiio.load_scp(str(tmp / f"a{n}/feats.scp")), kaldiio.load_scp(str(tmp / f"w{n}/feats.scp"))
        assert list(one) == list(two) == ["utt0", "utt1", "utt2"]
        for u in one:
            np.testing.assert_allclose(one[u], two[u], atol=1e-5)
        assert (tmp / f"w{n}/utt2num_frames").read_text() == (tmp / f"a{n}/utt2num_frames").read_text()
        meta_one = yaml.safe_load((tmp / f"a{n}/meta.yaml").read_text())
        meta_two = yaml.safe_load((tmp / f"w{n}/meta.yaml").read_text())
        assert meta_one["fingerprint"] == meta_two["fingerprint"] and meta_two["utterances"] == 3

"""Write DIR/utt2dur (seconds per utterance), like Kaldi's utils/data/get_utt2dur.sh.

Usage: python -m zlora.bin.get_utt2dur [--force] DIR
Durations come from segments when present, else from the audio headers (``cmd |`` pipes are run).
"""
from __future__ import annotations

from zlora.data.audio import utterance_durations
from zlora.data.kaldi import DataDir, write_kv
from zlora.utils.cli import ArgumentParser, run_main


def main(argv: list[str]) -> int:
    p = ArgumentParser("get_utt2dur", prog="get_utt2dur.sh", description=__doc__.splitlines()[0])
    p.add_argument("data", help="the data directory (utt2dur is written into it)")
    p.add_argument("--force", action="store_true", help="recompute even if utt2dur exists")
    args = p.parse_args(argv)
    dd = DataDir(args.data)
    if dd.utt2dur is not None and not args.force and set(dd.utt2dur) == set(dd.utts):
        print(f"get_utt2dur: {dd.path}/utt2dur already exists and covers all utterances; kept")
        return 0
    durs = utterance_durations(dd)
    write_kv(dd.path / "utt2dur", durs)
    print(f"get_utt2dur: wrote {dd.path}/utt2dur: {len(durs)} utterances, "
          f"{sum(durs.values()) / 3600:.3f} hours")
    return 0


if __name__ == "__main__":
    run_main(main)

r"""Build every data set of a data plan (paper Table I): convert, sample by hours or id list, combine.

    python -m zlora.bin.prep_plan --config conf/data/lite_1h.yaml \
        --roots.mls /corpora/mls --roots.commonvoice /corpora/cv-corpus-18.0-2024-06-14 ...

Plan format and semantics: zlora/data/prep/plan.py; ``--help`` lists the corpora a plan may use.
Prints one line per set and language (utterances, hours). Sets already built from the same plan
entry are skipped; converted corpus splits are reused while their prep.yaml matches, including the
fingerprint (size and mtime) of the corpus's transcript files, so an edited corpus is converted
again. ``--force true`` converts every split again and rebuilds every set. A recipe with its own
``--<corpus> DIR`` options passes ``--root_flag_prefix ""`` so that a missing root's message names
them.
"""
from __future__ import annotations

from zlora.config import load_config, save_config
from zlora.data.prep.plan import DataPlan, run_plan
from zlora.data.prep.registry import roots_help
from zlora.utils.cli import run_main
from zlora.utils.log import setup_logging


def main(argv: list[str]) -> int:
    # --help: the plan's keys (zlora.config_help), then the corpora a plan may use
    description = (f"{__doc__}\nCorpus roots (registered corpora and the layout each root must hold):\n"
                   f"{roots_help()}")
    plan = load_config(DataPlan, argv, description)
    setup_logging()
    summary = run_plan(plan)
    save_config(plan, f"{plan.out_dir}/prep_plan.resolved.yaml")
    for name, langs in summary.items():
        for lang, s in langs.items():
            hours = "?" if s["hours"] is None else f"{s['hours']:.3f}"
            print(f"prep_plan: {plan.out_dir}/{name}: {lang}: {s['utterances']} utterances, {hours} hours")
    return 0


if __name__ == "__main__":
    run_main(main)

"""A run's per-method averages beside a reference's, read back from two RESULTS.md files.

A recipe writes its results to ``exp/RESULTS.md`` and keeps the committed ``RESULTS.md`` as the
reference; at the end it prints, per (test set, regime) section, each method's "Avg" per
language group in this run, in the reference, and the difference. Both files are what
``zlora.scoring.report.build_results_md`` writes: ``## <set>: <regime>`` sections, ``### <group>``
tables whose header ends with ``Avg | seeds``; cells are ``12.34``, ``12.34 ± 0.56`` or ``–``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zlora.utils.cli import UserError

NOT_SECTIONS = ("How each row was produced", "Language identification")


@dataclass
class GroupTable:
    """One method table: its language columns and, per method, the Avg cell as written."""
    langs: list[str]
    avg: dict[str, str] = field(default_factory=dict)


# {section title: {group title: GroupTable}}, in file order
Tables = dict[str, dict[str, GroupTable]]


def cells(line: str) -> list[str]:
    """'| a | b |' -> ['a', 'b']."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_results_md(text: str) -> Tables:
    """The method tables of a RESULTS.md (relative-change, LID and provenance tables are skipped)."""
    out: Tables = {}
    section = group = None
    table: GroupTable | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            section = None if title.startswith(NOT_SECTIONS) else title
            group = table = None
        elif line.startswith("### "):
            group, table = line[4:].strip(), None
        elif section and group and line.startswith("| Method |") and cells(line)[-2:] == ["Avg", "seeds"]:
            langs = [c.split(" (")[0] for c in cells(line)[1:-2]]
            table = out.setdefault(section, {})[group] = GroupTable(langs)
        elif table is not None and line.startswith("|"):
            row = cells(line)
            if row[0] and not set(row[0]) <= set("-: "):        # not the |---| separator
                table.avg[row[0]] = row[-2]
        else:
            table = None
    return out


def read_results_md(path: str | Path) -> Tables:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist (zlora.bin.report writes it)")
    tables = parse_results_md(path.read_text(encoding="utf-8"))
    if not tables:
        raise UserError(f"{path}: no method table (| Method | ... | Avg | seeds |) found")
    return tables


def cell_mean(cell: str | None) -> float | None:
    """'12.34 ± 0.56' -> 12.34; '–' or None -> None."""
    try:
        return float(cell.split("±")[0]) if cell else None
    except ValueError:
        return None


def delta(this: str | None, ref: str | None) -> str:
    a, b = cell_mean(this), cell_mean(ref)
    return "–" if a is None or b is None else f"{a - b:+.2f}"


def compare(this: Tables, ref: Tables) -> str:
    """Markdown: per section of this run, one row per method; per language group, the Avg of this
    run, of the reference and their difference (this - reference, points)."""
    parts = []
    for section, groups in this.items():
        names = list(groups)
        head = ["Method"] + [f"{short(g)}: {col}" for g in names for col in ("this run", "reference", "Δ")]
        lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
        methods = list(dict.fromkeys(m for g in names for m in groups[g].avg))
        for method in methods:
            row = [method]
            for g in names:
                mine = groups[g].avg.get(method)
                theirs = ref.get(section, {}).get(g, GroupTable([])).avg.get(method)
                row += [mine or "–", theirs or "–", delta(mine, theirs)]
            lines.append("| " + " | ".join(row) + " |")
        notes = language_notes(section, groups, ref)
        parts += [f"### {section}", "", *lines, "", *notes, *([""] if notes else [])]
    return "\n".join(parts).rstrip() + "\n"


def short(group: str) -> str:
    return group.removesuffix(" languages")


def language_notes(section: str, groups: dict[str, GroupTable], ref: Tables) -> list[str]:
    """A line per group whose languages differ from the reference's: its averages are over other
    languages, so the difference says little (e.g. the smoke setting against the full demo)."""
    notes = []
    for g, table in groups.items():
        other = ref.get(section, {}).get(g)
        if other is None:
            notes.append(f"- {g}: not in the reference.")
        elif other.langs != table.langs:
            notes.append(f"- {g}: this run averages {','.join(table.langs)}, the reference "
                         f"{','.join(other.langs)}: not comparable.")
    return notes

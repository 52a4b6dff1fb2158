"""Site files with planted canaries: distinctive strings and numbers that must never leave a site."""

from __future__ import annotations

from pathlib import Path

CELL_CANARY = "MRN-884213"
HEADER_CANARY = "ZQXJHDR9931"
FOLDER_CANARY = "CANARYDIR7731"
FILE_CANARY = "canaryfile5521"
NUMBER_CANARY = "89.4567"
CANARIES = (CELL_CANARY, HEADER_CANARY, FOLDER_CANARY, FILE_CANARY, NUMBER_CANARY)


def plant(site_toml: Path, *, auto_approve: bool) -> None:
    """Move the data under canary names, add a canary column and cell, an unusual number."""
    site_dir = site_toml.parent
    lines = (site_dir / "data.csv").read_text().splitlines()
    header = lines[0].split(",")
    age = header.index("age")
    rows = [line.split(",") for line in lines[1:]]
    rows[0][age] = NUMBER_CANARY
    out = [",".join([*header, HEADER_CANARY])]
    out += [",".join([*r, CELL_CANARY if i == 0 else "x"]) for i, r in enumerate(rows)]
    folder = site_dir / FOLDER_CANARY
    folder.mkdir()
    (folder / f"{FILE_CANARY}.csv").write_text("\n".join(out) + "\n")
    (site_dir / "data.csv").unlink()
    text = site_toml.read_text().replace('"data.csv"', f'"{FOLDER_CANARY}/{FILE_CANARY}.csv"')
    if not auto_approve:
        text = text.replace("auto_approve = true", "auto_approve = false")
    site_toml.write_text(text)

"""docs/configuration.md's field table is generated from the dataclasses and must be current."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_field_reference_is_current():
    out = subprocess.run([sys.executable, str(REPO / "scripts/gen_config_docs.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_field_is_documented():
    sys.path.insert(0, str(REPO / "scripts"))
    from gen_config_docs import SECTIONS, field_rows

    import dataclasses

    for section, cls in SECTIONS.items():
        rows = {name: comment for name, _, _, comment in field_rows(cls)}
        assert set(rows) == {f.name for f in dataclasses.fields(cls)}, section
        assert all(rows.values()), f"{section}: a field without a comment: {[n for n, c in rows.items() if not c]}"

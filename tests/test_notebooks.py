"""Run every notebook in nbs/ as a test, through nbdev's runner (one pytest test per notebook).

Cells flagged `#| slow` are skipped unless MATHNB_SLOW=1 is set (the full-size runs)."""
import os
from pathlib import Path
import pytest
from nbdev.test import test_nb as run_nb

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT/'nbs').glob('*.ipynb'))

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook(nb):
    skip = [] if os.environ.get('MATHNB_SLOW') == '1' else ['slow']
    ok, secs = run_nb(nb, skip_flags=skip, showerr=True)
    assert ok, f'{nb.name} failed (see the traceback above)'

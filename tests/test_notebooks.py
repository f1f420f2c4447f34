"""Run every notebook in nbs/ two ways, one pytest test each:

- through nbdev's runner, which honours the cell flags (`#| slow` cells run only with MATHNB_SLOW=1);
- the way Jupyter's Run All does (nbclient, every cell, flags ignored), asserting that no cell raised. This is what a
  reader meets in JupyterLab or Colab."""
import os
from pathlib import Path
import pytest
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbdev.test import test_nb as run_nb

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT/'nbs').glob('*.ipynb'))

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook(nb):
    skip = [] if os.environ.get('MATHNB_SLOW') == '1' else ['slow']
    ok, secs = run_nb(nb, skip_flags=skip, showerr=True)
    assert ok, f'{nb.name} failed (see the traceback above)'

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_run_all_like_jupyter(nb, tmp_path):
    book = nbformat.read(nb, as_version=4)
    client = NotebookClient(book, timeout=1800, kernel_name='python3', resources={'metadata': {'path': str(nb.parent)}})
    try: client.execute()
    except CellExecutionError as e: pytest.fail(f'{nb.name}: a cell raised in Run All:\n{str(e)[-3000:]}')
    errors = [o for c in book.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'error']
    assert not errors, f'{nb.name}: error outputs {[e["ename"] for e in errors]}'

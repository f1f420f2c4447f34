"""Execute notebooks top to bottom the way Jupyter's Run All does (nbdev's cell flags mean nothing here), and save
them with their outputs, so the committed notebooks show what their code produces.

    python tools/execute_notebooks.py                # every notebook in nbs/
    python tools/execute_notebooks.py 04_training    # some of them

Run `nbdev_clean` afterwards (it keeps the outputs and drops the metadata that changes from run to run)."""
import sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

NBS = Path(__file__).resolve().parents[1]/'nbs'

def execute(path:Path, timeout:int=1800) -> float:
    "Run every cell of notebook `path` in a fresh kernel with `nbs/` as working folder; raise on the first error."
    nb = nbformat.read(path, as_version=4)
    t = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(NBS)}}).execute()
    nbformat.write(nb, path)
    return time.time() - t

if __name__ == '__main__':
    names = sys.argv[1:] or sorted(p.stem for p in NBS.glob('*.ipynb'))
    for n in names:
        print(f'{n}: {execute(NBS/f"{n}.ipynb"):.0f}s', flush=True)

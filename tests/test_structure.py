"The package's shape: modules depend on each other one way only (no import cycles)."
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]/'mathnb'

def imports() -> dict:
    mods = {p.stem: p.read_text() for p in PKG.glob('*.py') if not p.stem.startswith('_')}
    pat = re.compile(r'^\s*(?:from\s+(?:\.|mathnb\.)(\w+)\s+import|import\s+mathnb\.(\w+))', re.M)
    return {m: {a or b for a, b in pat.findall(s)} & set(mods) - {m} for m, s in mods.items()}

def test_no_import_cycles():
    g, seen, cycles = imports(), set(), []
    def visit(n, path):
        for k in sorted(g[n]):
            if k in path: cycles.append(path[path.index(k):] + [k])
            elif (n, k) not in seen:
                seen.add((n, k))
                visit(k, path + [k])
    for m in g: visit(m, [m])
    assert not cycles, cycles

def test_core_and_tokenizer_are_at_the_bottom():
    g = imports()
    assert g['core'] == set() and g['tokenizer'] <= {'core'}
    assert 'evaluation' not in g['training'] and 'training' not in g['data']

"The package's shape: modules import only modules of earlier chapters (by notebook order), never private names."
import ast, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG, NBS = ROOT/'mathnb', ROOT/'nbs'


def chapters() -> dict:
    "Module name -> position of its notebook in chapter order (notebook file names sort in chapter order)."
    out = {}
    for i, nb in enumerate(sorted(NBS.glob('*.ipynb'))):
        m = re.search(r'#\|\s*default_exp\s+([\w.]+)', nb.read_text(encoding='utf-8'))
        if m: out[m.group(1)] = i
    return out


def imports(path:Path) -> list[tuple[str, list[str]]]:
    "(mathnb module, imported names) of every import of a mathnb module in `path`, inside functions too."
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level == 1 and not mod: out += [(a.name, []) for a in node.names if (PKG/f'{a.name}.py').exists()]
            elif node.level == 1: out.append((mod.split('.')[0], [a.name for a in node.names]))
            elif mod.startswith('mathnb.'): out.append((mod.split('.')[1], [a.name for a in node.names]))
            elif mod == 'mathnb': out += [(a.name, []) for a in node.names if (PKG/f'{a.name}.py').exists()]
        elif isinstance(node, ast.Import):
            out += [(a.name.split('.')[1], []) for a in node.names if a.name.startswith('mathnb.')]
    return out


MODULES = [p for p in PKG.glob('*.py') if not p.stem.startswith('_')]


def test_every_module_has_a_chapter():
    assert {p.stem for p in MODULES} <= set(chapters()), {p.stem for p in MODULES} - set(chapters())


def test_no_module_imports_a_later_chapter():
    order, bad = chapters(), []
    for p in MODULES:
        for mod, _ in imports(p):
            if mod != p.stem and mod in order and order[mod] >= order[p.stem]: bad.append(f'{p.stem} imports {mod}')
    assert not bad, bad


def test_no_private_names_across_modules():
    bad = [f'{p.stem} imports {mod}.{n}' for p in MODULES for mod, names in imports(p) for n in names
           if n.startswith('_') and mod != p.stem]
    assert not bad, bad


def test_core_and_tokenizer_are_at_the_bottom():
    deps = {p.stem: {m for m, _ in imports(p)} - {p.stem} for p in MODULES}
    assert deps['core'] == set() and deps['tokenizer'] <= {'core'}
    assert 'training' not in deps['evaluation'] and 'evaluation' not in deps['data']

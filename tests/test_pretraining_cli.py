"""mathnb-tokenizer and mathnb-corpus as a user runs them: byte-identical reruns, --order read back from train.bin,
malformed rows refused before anything is written, a corpus larger than the memory left to the command, uint32 ids."""
import json, os, resource, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from conftest import run_cli, assert_user_error
from mathnb.pretraining import local_corpus, open_corpus, doc_hash, read_documents
from mathnb.tokenizer import load_tokenizer
from mathnb.benchmarks import data_dir

pytestmark = pytest.mark.skipif(not (data_dir()/'gsm8k/train.jsonl').exists(), reason='no ../shared/data')
ENV = {'OMP_NUM_THREADS': '1', 'RAYON_NUM_THREADS': '1'}
ORDER = ['arithmetic', 'gsm8k', 'mathqa', 'math']


def files(d:Path) -> dict:
    "Every file under `d` (hidden ones too) with its bytes: what a refused command must leave as it was."
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()} if d.exists() else {}


@pytest.fixture(scope='module')
def texts(tmp_path_factory) -> list[Path]:
    "The local corpus, 100 documents of each source: GSM8K answers, MATH, MathQA rationales, generated arithmetic."
    d = tmp_path_factory.mktemp('text')
    assert local_corpus(d, limit=100, n_arithmetic=100) == dict.fromkeys(['gsm8k', 'math', 'mathqa', 'arithmetic'], 100)
    return sorted(d.glob('*.jsonl'))


@pytest.fixture(scope='module')
def tok_dirs(texts, tmp_path_factory) -> list[Path]:
    "Two tokenizers trained by two runs of the same command."
    out = [tmp_path_factory.mktemp(f'tok{i}') for i in range(2)]
    for d in out: run_cli('mathnb-tokenizer', '--input', *texts, '--vocab-size', 400, '--out', d, env=ENV, check=True)
    return out


def corpus(tok, texts, out, *args, check=True):
    return run_cli('mathnb-corpus', '--tokenizer', tok, '--input', *texts, '--out', out, *args, env=ENV, check=check)


def decoded_docs(tok, ids) -> list[str]:
    "The documents of a token array: decoded, split at `<end>`."
    assert ids[-1] == tok.end_id
    return tok.decode(ids).split('<end>')[:-1]


def test_tokenizer_is_deterministic(tok_dirs):
    a, b = [(d/'tokenizer.json').read_bytes() for d in tok_dirs]
    assert a == b
    tok = load_tokenizer(tok_dirs[0])
    assert tok.vocab_size == 400 and len(tok.encode('2024')) == 4


def test_corpus_is_deterministic_and_holds_every_document(texts, tok_dirs, tmp_path):
    for d in ('a', 'b'): corpus(tok_dirs[0], texts, tmp_path/d, '--val-fraction', 0.1)
    assert files(tmp_path/'a') == files(tmp_path/'b')
    assert sorted(files(tmp_path/'a')) == ['meta.json', 'tokenizer.json', 'train.bin', 'val.bin']
    train, val, meta = open_corpus(tmp_path/'a')
    tok = load_tokenizer(tmp_path/'a')
    assert train.dtype == np.uint16 and meta['dtype'] == 'uint16' and meta['order'] is None
    docs = [d.text for p in texts for d in read_documents(p)]
    want_val = sorted(t for t in docs if doc_hash(t) < 0.1)
    assert sorted(decoded_docs(tok, val)) == want_val and 20 < len(want_val) < 60
    assert sorted(decoded_docs(tok, train) + want_val) == sorted(docs)
    assert meta['n_documents'] == {'train': len(docs) - len(want_val), 'val': len(want_val)}
    assert sum(meta['tokens']['train'].values()) == len(train) == meta['n_tokens']['train']
    sources = [json.loads(l)['source'] for p in texts for l in p.open()]
    assert decoded_docs(tok, train)[:8] != [t for t in docs if doc_hash(t) >= 0.1][:8]     # shuffled
    assert set(sources) == set(meta['tokens']['train'])


def test_order_is_read_back_from_train_bin(texts, tok_dirs, tmp_path):
    corpus(tok_dirs[0], texts, tmp_path/'c', '--order', ','.join(ORDER))
    train, val, meta = open_corpus(tmp_path/'c')
    tok = load_tokenizer(tmp_path/'c')
    source_of = {json.loads(l)['text']: json.loads(l)['source'] for p in texts for l in p.open()}
    seen = [source_of[t] for t in decoded_docs(tok, train)]
    assert seen == sorted(seen, key=ORDER.index) and set(seen) == set(ORDER)
    assert meta['order'] == ORDER and list(meta['spans']['train']) == ORDER
    for name, (a, b) in meta['spans']['train'].items():
        assert {source_of[t] for t in decoded_docs(tok, train[a:b])} == {name}
    ranks = [ORDER.index(source_of[t]) for t in decoded_docs(tok, val)]
    assert ranks == sorted(ranks) and len(set(ranks)) > 1


def test_order_refuses_unlisted_and_unknown_sources(texts, tok_dirs, tmp_path):
    before = files(tmp_path)
    r = corpus(tok_dirs[0], texts, tmp_path/'c', '--order', 'arithmetic,gsm8k,math', check=False)
    assert_user_error(r, f"{texts[3]}:1: source 'mathqa' is not in --order (arithmetic,gsm8k,math)")
    r = corpus(tok_dirs[0], texts, tmp_path/'c', '--order', ','.join(ORDER + ['books']), check=False)
    assert_user_error(r, '--order names books, but no document has that source')
    assert files(tmp_path) == before


BAD_ROWS = {'bad JSON': (b'{"text": "half', 'not valid JSON'),
            'missing text field': (b'{"body": "x"}', 'no text field'),
            'text not a string': (b'{"text": 42}', "field 'text' must be a string, got a number"),
            'not UTF-8': (b'{"text": "caf\xe9"}', 'not UTF-8'),
            'not an object': (b'["text"]', 'expected a JSON object, got an array')}


@pytest.mark.parametrize('case', BAD_ROWS)
def test_malformed_row_is_refused_before_writing(case, tok_dirs, tmp_path):
    bad, reason = BAD_ROWS[case]
    good = tmp_path/'good.jsonl'
    good.write_text(''.join(json.dumps({'text': f'{i}+{i}={2 * i}'}) + '\n' for i in range(50)))
    src = tmp_path/'src.jsonl'
    src.write_bytes(b'{"text": "1+1=2"}\n\n' + bad + b'\n{"text": "2+2=4"}\n')
    before = files(tmp_path)
    r = corpus(tok_dirs[0], [good, src], tmp_path/'out/corpus', check=False)
    assert_user_error(r, f'{src}:3: ', reason)
    if case in ('bad JSON', 'not UTF-8'):
        r = run_cli('mathnb-tokenizer', '--input', good, src, '--vocab-size', 300, '--out', tmp_path/'tok', env=ENV)
        assert_user_error(r, f'{src}:3: ', reason)
    assert files(tmp_path) == before and not (tmp_path/'out').exists() and not (tmp_path/'tok').exists()


def test_out_folder_is_replaced_only_with_overwrite(texts, tok_dirs, tmp_path):
    corpus(tok_dirs[0], texts[:2], tmp_path/'c')
    before = files(tmp_path)
    assert_user_error(corpus(tok_dirs[0], texts, tmp_path/'c', check=False), 'add --overwrite')
    (tmp_path/'notes').mkdir()
    (tmp_path/'notes/a.txt').write_text('mine')
    assert_user_error(corpus(tok_dirs[0], texts, tmp_path/'notes', '--overwrite', check=False), 'not a corpus folder')
    assert files(tmp_path) == before | {'notes/a.txt': b'mine'}
    corpus(tok_dirs[0], texts, tmp_path/'c', '--overwrite')
    assert list(open_corpus(tmp_path/'c')[2]['tokens']['train']) == ['arithmetic', 'gsm8k', 'math', 'mathqa']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['c', 'notes']       # no staging folder left
    r = run_cli('mathnb-tokenizer', '--input', *texts, '--vocab-size', 300, '--out', tok_dirs[1], env=ENV)
    assert_user_error(r, 'tokenizer.json: exists; add --overwrite')


def test_large_vocabulary_gives_uint32(texts, tok_dirs, tmp_path):
    "A tokenizer of 70,000 tokens (the trained one plus unused entries): same ids, stored as uint32."
    d = json.loads((tok_dirs[0]/'tokenizer.json').read_text())
    d['model']['vocab'] |= {f'<unused{i}>': 400 + i for i in range(70_000 - 400)}
    (tmp_path/'big').mkdir()
    (tmp_path/'big/tokenizer.json').write_text(json.dumps(d))
    corpus(tmp_path/'big', texts, tmp_path/'c32')
    corpus(tok_dirs[0], texts, tmp_path/'c16')
    (t32, v32, m32), (t16, v16, m16) = open_corpus(tmp_path/'c32'), open_corpus(tmp_path/'c16')
    assert (m32['dtype'], m32['vocab_size'], t32.dtype, m16['dtype']) == ('uint32', 70_000, np.uint32, 'uint16')
    assert (tmp_path/'c32/train.bin').stat().st_size == 4 * len(t32)
    assert np.array_equal(t32, t16) and np.array_equal(v32, v16)


PEAK = ("import sys\nfrom mathnb.pretraining import build_corpus\n"
        "try: exec(sys.argv[1])\n"
        "finally: print('VmPeak', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmPeak')][0],"
        " file=sys.stderr)")


def vm_run(code:str, limit:int|None=None) -> tuple[subprocess.CompletedProcess, int]:
    "Run `code` (after importing mathnb.pretraining) under an address-space `limit` in bytes; its peak virtual memory."
    lim = (lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))) if limit else None
    r = subprocess.run([sys.executable, '-c', PEAK, code], capture_output=True, text=True, preexec_fn=lim, timeout=120,
                       env={**os.environ, **ENV, 'MALLOC_ARENA_MAX': '1'})
    peak = [l for l in r.stderr.splitlines() if l.startswith('VmPeak')]
    return r, int(peak[-1].split()[1]) * 1024 if peak else -1


def test_corpus_larger_than_the_memory_it_may_use(tmp_path):
    """Under RLIMIT_AS = (peak of a 1 MB corpus) + 16 MB, a 40 MB corpus builds; reading it whole does not fit.
    The documents are long runs of letters, so a 300-token BPE encodes them fast: the test is about memory.
    MALLOC_ARENA_MAX=1: no per-thread malloc arena reserves (and releases) 64 MB of address space, so the peak
    measured is what the process holds."""
    words = ['x' * 63, 'y' * 63, 'z' * 63, 'w' * 31]
    def write(path, mb):
        with open(path, 'w') as f:
            for i in range(int(mb * 2**20 / 3300)):
                text = f'doc {i}: ' + ' '.join(words[(i + k) % 4] for k in range(50))
                f.write(json.dumps({'text': text, 'source': 'abc'[i % 3]}) + '\n')
    write(tmp_path/'small.jsonl', 1)
    write(tmp_path/'big.jsonl', 40)
    run_cli('mathnb-tokenizer', '--input', tmp_path/'small.jsonl', '--vocab-size', 300, '--out', tmp_path/'tok',
            env=ENV, check=True)
    build = lambda src, out: f"build_corpus({str(tmp_path/'tok')!r}, [{str(src)!r}], {str(out)!r}, progress=False)"
    r, peak = vm_run(build(tmp_path/'small.jsonl', tmp_path/'s1'))
    assert r.returncode == 0, r.stderr
    limit, big = peak + 16 * 2**20, tmp_path/'big.jsonl'
    assert big.stat().st_size > 2 * (limit - peak)
    r, _ = vm_run(build(big, tmp_path/'b'), limit)
    assert r.returncode == 0, r.stderr[-2000:]
    train, val, meta = open_corpus(tmp_path/'b')
    assert meta['n_documents']['train'] + meta['n_documents']['val'] == sum(1 for _ in big.open())
    assert len(train) + len(val) == sum(meta['tokens']['train'].values()) + sum(meta['tokens']['val'].values())
    # the same limit is binding: after the same small build, holding the corpus file's bytes fails
    r, _ = vm_run(build(tmp_path/'small.jsonl', tmp_path/'s2') + f"\nopen({str(big)!r}, 'rb').read()", limit)
    assert r.returncode != 0 and 'MemoryError' in r.stderr, r.stderr[-2000:]


def test_hub_fails_fast_offline(tok_dirs, tmp_path):
    env = {**ENV, 'HF_HUB_OFFLINE': '1'}
    r = run_cli('mathnb-corpus', '--tokenizer', tok_dirs[0], '--hub', 'open-web-math/open-web-math', '--out', tmp_path/'c',
                env=env, timeout=60)
    assert_user_error(r, '--hub open-web-math/open-web-math: not found locally, and the Hugging Face hub cannot be reached')
    r = run_cli('mathnb-tokenizer', '--hub', 'AI-MO/NuminaMath-CoT', '--out', tmp_path/'t', env=env, timeout=60)
    assert_user_error(r, 'cannot be reached')
    assert not (tmp_path/'c').exists() and not (tmp_path/'t').exists() and list(tmp_path.iterdir()) == []

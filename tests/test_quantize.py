"Int8 quantization: the shipped add3-cot model quantized still solves held-out problems, loads bit for bit in every tool, and bad input exits 2."
import json, re, subprocess, sys
from pathlib import Path
import pytest, torch
from conftest import run_cli, assert_user_error
from mathnb.model import load_model, load_config, default_model_dir
from mathnb.core import UserError
from mathnb.model import ModelLoadError
from mathnb.quantize import quantize_dir, quantize_model, int8_tensors, save_quantized, held_out, mathnb_quantize

ADD3 = default_model_dir()
QUANTIZE = [sys.executable, '-c', 'from mathnb.quantize import mathnb_quantize_cli; mathnb_quantize_cli()']


def quantize(*args) -> subprocess.CompletedProcess:
    return subprocess.run(QUANTIZE + [str(a) for a in args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def int8_dir(tmp_path_factory) -> tuple[Path, dict]:
    "add3-cot quantized (int8-dynamic) and compared on 50 held-out problems, once for the module."
    out = tmp_path_factory.mktemp('q')/'add3-int8'
    rep = quantize_dir(ADD3, out, 'int8-dynamic', n=50)
    return out, rep


def test_int8_model_still_solves_held_out_problems(int8_dir):
    out, rep = int8_dir
    q, tok = load_model(out)
    _, rows, where = held_out(ADD3, 50, tok)
    assert 'test split' in where and len(rows) == 50
    from mathnb.data import load_task
    from mathnb.evaluation import evaluate
    res = evaluate(q, tok, load_task(out), rows)
    assert res.summary['correct'] >= 45, res.summary['correct']          # add3-cot: 100% in fp32
    assert res.summary['accuracy'] == rep['int8']['exact_match']


def test_report_fields_are_sane(int8_dir):
    out, rep = int8_dir
    assert rep == {**json.loads((out/'quantize.json').read_text()), 'base': rep['base']}
    assert (rep['scheme'], rep['backend'], rep['threads'], rep['n']) == ('int8-dynamic', 'torchao', 1, 50)
    assert rep['int8']['size_bytes'] < rep['fp32']['size_bytes'] == (ADD3/'model.safetensors').stat().st_size
    assert 0 <= rep['agreement'] <= 1 and rep['agreement'] > 0.95
    lo, hi = rep['delta_ci95']
    assert lo <= rep['delta'] <= hi
    assert rep['delta'] == pytest.approx(rep['int8']['exact_match'] - rep['fp32']['exact_match'])
    assert rep['int8']['by'] == 'cell' and set(rep['int8']['by_cell']) == set(rep['fp32']['by_cell'])
    assert all(0 <= v <= 1 for v in rep['int8']['by_cell'].values())
    for side in ('fp32', 'int8'): assert rep[side]['latency_b1_ms'] > 0 and rep[side]['latency_b256_ms'] > 0
    assert load_config(out)['quantization']['scheme'] == 'int8-dynamic'


@pytest.mark.parametrize('scheme,backend', [('int8-weight', 'torchao'), ('int8-dynamic', 'torch.ao')])
def test_saved_int8_loads_bit_for_bit(tmp_path, scheme, backend):
    fp, tok = load_model(ADD3)
    q, ran = quantize_model(fp, scheme, backend)
    assert ran == backend
    d = save_quantized(fp, q, ADD3, tmp_path/'q', dict(scheme=scheme, backend=ran))
    q2, _ = load_model(d)
    want, got = int8_tensors(q), int8_tensors(q2)
    assert want.keys() == got.keys() and all(torch.equal(got[k], v) for k, v in want.items())
    x = torch.tensor([tok.encode('658+189=<think>8+9=17')])
    assert torch.equal(q2(x), q(x))


def test_tools_load_the_int8_dir(int8_dir):
    out, _ = int8_dir
    r = run_cli('mathnb-eval', '--model', out)                         # on OUT/test.jsonl, written by the command
    assert r.returncode == 0, r.stderr
    assert '(50 problems)' in r.stdout and 'exact match' in r.stdout
    r = run_cli('mathnb-solve', '658+189=', '--model', out)
    assert r.returncode == 0 and 'answer: 847' in r.stdout, r.stdout + r.stderr


def test_command_writes_dir_and_table(tmp_path):
    out = tmp_path/'w8'
    r = quantize('--model', ADD3, '--out', out, '--scheme', 'int8-weight', '--n', 20)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == '', r.stderr                            # torchao's import noise is quieted
    assert '| int8-weight (torchao) |' in r.stdout and '| fp32 |' in r.stdout and 'cell:' in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ['config.json', 'model.safetensors', 'quantize.json',
                                                     'test.jsonl', 'tokenizer.json']


def test_bad_input_exits_2_and_writes_nothing(int8_dir, tmp_path):
    out, _ = int8_dir
    new = tmp_path/'new'
    cases = [(('--model', tmp_path/'none', '--out', new), 'not a model directory'),
             (('--model', out, '--out', new), 'already quantized'),
             (('--model', ADD3, '--out', ADD3, '--scheme', 'int8-weight'), 'is the model directory itself')]
    for args, msg in cases:                                            # as commands: exit 2, one line
        assert_user_error(quantize(*args), msg)
        assert not new.exists()
    cases = [(dict(model=ADD3, out=new, scheme='int4'), "unknown scheme 'int4'"),
             (dict(model=ADD3, out=new, backend='onnx'), "unknown backend 'onnx'"),
             (dict(model=ADD3, out=new, n=0), '--n must be an integer >= 1'),
             (dict(model=ADD3, out=out), 'exists and is not empty'),
             (dict(model=ADD3), '--out DIR is required')]
    for kw, msg in cases:                                              # the same checks, in process
        with pytest.raises(UserError, match=re.escape(msg)): mathnb_quantize(**kw)
        assert not new.exists()
    assert sorted(p.name for p in ADD3.iterdir()) == ['config.json', 'eval.json', 'metrics.jsonl',
                                                      'model.safetensors', 'tokenizer.json']


def test_damaged_int8_dir_is_one_line(int8_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    import shutil
    out, _ = int8_dir
    bad = tmp_path/'bad'
    shutil.copytree(out, bad)
    sd = load_file(bad/'model.safetensors')
    sd['blocks.0.mlp.up_proj.weight_scale'][0] = float('nan')
    save_file(sd, bad/'model.safetensors')
    assert_user_error(run_cli('mathnb-eval', '--model', bad), 'not finite', 'blocks.0.mlp.up_proj')
    (bad/'model.safetensors').write_bytes(b'junk')
    with pytest.raises(ModelLoadError, match='not a readable safetensors file'): load_model(bad)

"""One Hugging Face loader and generator: a `to_hf` export with mathnb's character tokenizer loads through
`load_hf`, and `hf_complete` writes what mathnb's `complete` writes from the same weights."""
import os
from pathlib import Path
import pytest, torch
import torch.nn.functional as F

os.environ.setdefault('OMP_NUM_THREADS', '1')
from transformers.utils import logging as hf_logging
from mathnb.tokenizer import CharTokenizer, train_bpe
from mathnb.model import GPT, ModelLoadError, complete, get_config, hf_complete, load_hf, model_dir_kind, to_hf

hf_logging.disable_progress_bar()
PROMPTS = ['12+34=', '5+6=', '123+456=', '7+8=<think>', '40+2=']


def fit_cot(tok, steps=120) -> GPT:
    "A llama-like mathnb model fitted a little to chain-of-thought rows, so completions hold `<think>` and `<end>`."
    rows = [f'{a}+{b}=<think>{b}+{a}</think>{a + b}<end>' for a in range(0, 60, 7) for b in range(0, 60, 3)]
    enc = [tok.encode(r) for r in rows]
    batch = torch.tensor([e + [tok.pad_id] * (max(map(len, enc)) - len(e)) for e in enc])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT(get_config('llama-tiny', tok.vocab_size, n_layer=2, n_embd=64, n_head=4, n_kv_head=2))
        opt = model.configure_optimizer(lr=3e-3)
        for _ in range(steps):
            b = batch[torch.randint(0, len(batch), (32,))]
            loss = F.cross_entropy(model(b[:, :-1]).flatten(0, 1), b[:, 1:].flatten(), ignore_index=tok.pad_id)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope='module')
def char_export(tmp_path_factory):
    "(mathnb model, its char tokenizer, folder of its `to_hf` export with that tokenizer saved beside it)."
    tok = CharTokenizer()
    model = fit_cot(tok)
    d = tmp_path_factory.mktemp('hf')/'char'
    to_hf(model, tok).save_pretrained(d)
    tok.save(d)
    return model, tok, d


def test_char_export_loads_through_load_hf(char_export):
    model, tok, d = char_export
    assert model_dir_kind(d) == 'hf'
    hm, htok = load_hf(d)
    assert isinstance(htok, CharTokenizer) and htok.to_json() == tok.to_json()
    ids = torch.tensor([tok.encode(p) for p in ('12+34=', '56+78=')])
    with torch.no_grad(): assert torch.allclose(hm(ids).logits, model(ids), atol=1e-5)
    other = CharTokenizer()
    assert load_hf(d, tokenizer=other)[1] is other                   # a tokenizer given is used as it is


def test_load_hf_errors_are_one_line(char_export, tmp_path):
    _, tok, d = char_export
    (tmp_path/'weights-only').mkdir()
    for f in ('config.json', 'model.safetensors'): (tmp_path/'weights-only'/f).write_bytes((d/f).read_bytes())
    (tmp_path/'empty').mkdir()
    (tmp_path/'no-weights').mkdir()
    (tmp_path/'no-weights'/'config.json').write_text((d/'config.json').read_text())
    tok.save(tmp_path/'no-weights')
    for bad in ('weights-only', 'empty', 'no-weights'):
        with pytest.raises(ModelLoadError) as e: load_hf(tmp_path/bad)
        msg = str(e.value)
        assert '\n' not in msg and msg.startswith(f'{tmp_path/bad}: cannot load a Hugging Face causal LM'), msg


@pytest.mark.parametrize('batch_size', [1, 2, 16])
def test_hf_complete_with_mathnb_tokenizer_equals_complete(char_export, batch_size):
    model, tok, d = char_export
    hm, htok = load_hf(d)
    want = complete(model, tok, PROMPTS, 20)
    assert sum('<end>' in c for c in want) >= 3 and any('</think>' in c for c in want)   # special tokens to keep
    got = hf_complete(hm, htok, PROMPTS, 20, batch_size=batch_size, skip_special_tokens=False)
    assert got == want
    plain = hf_complete(hm, htok, PROMPTS, 20, batch_size=batch_size)
    assert plain == [tok.decode(tok.encode(c), skip_special=True) for c in want]
    assert not any('<' in c for c in plain)


def test_hf_complete_adds_no_second_bos(tmp_path):
    "A transformers tokenizer that adds a BOS adds none to text that already starts with one (a chat template)."
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast
    bpe = train_bpe([f'{a} apples and {b} pears' for a in range(20) for b in range(20)], 300)
    tk = Tokenizer.from_str(bpe.to_json())
    tk.post_processor = processors.TemplateProcessing(single='<bos> $A', special_tokens=[('<bos>', bpe.bos_id)])
    btok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token='<bos>', eos_token='<end>', pad_token='<pad>')
    torch.manual_seed(0)
    hm = to_hf(GPT(get_config('llama-tiny', bpe.vocab_size, n_layer=1, n_embd=32, n_head=4, n_kv_head=2)))
    seen, generate = [], hm.generate
    def spy(**kw):
        seen.append(kw['input_ids'].tolist())
        return generate(**kw)
    hm.generate = spy
    out = hf_complete(hm, btok, ['<bos>3 apples and', '3 apples and'], 4, batch_size=1)
    assert seen[0] == seen[1] == [[bpe.bos_id] + bpe.encode('3 apples and')]
    assert out[0] == out[1]


def test_hf_teacher_writes_what_the_mathnb_teacher_writes(char_export, tmp_path):
    "Sequence-level distillation from the export gets the same targets, `<think>` and `<end>` included."
    from mathnb.model import save_model
    from mathnb.distillation import load_teacher
    model, tok, d = char_export
    save_model(model, tok, tmp_path/'gpt')
    t_hf, t_gpt = load_teacher(d), load_teacher(tmp_path/'gpt')
    assert t_hf.is_hf and not t_gpt.is_hf and t_hf.net.config._attn_implementation == 'eager'
    assert t_hf.complete(PROMPTS, 20) == t_gpt.complete(PROMPTS, 20)

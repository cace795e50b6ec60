"""lc-oneshot-lm over a (tiny, random) Hugging Face causal-LM folder: perplexity before and after, the INT4 file that
reloads to the same logits, pruning, and clear errors for bad arguments."""

from __future__ import annotations

import pytest
import torch

from lightning_compress.cli.oneshot_lm import main, run


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_lm")
    words = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["[UNK]"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    (folder / "text.txt").write_text("the quick brown fox jumps over the lazy dog " * 40)
    return str(folder)


def test_gptq_writes_an_int4_model_that_reloads_and_reports_perplexity(lm_dir: str, tmp_path, capsys) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from lightning_compress.quantization.weight_only.weight_only_file import load_weight_only

    out = tmp_path / "w4"
    args = [lm_dir, "--text", f"{lm_dir}/text.txt", "--window", "32", "--calibration-windows", "4",
            "--eval-windows", "2", "--method", "gptq", "--bits", "4", "--group-size", "32",
            "--output", str(out)]  # fmt: skip
    summary = run(args)
    printed = capsys.readouterr().out
    assert "perplexity before:" in printed and "perplexity after:" in printed
    assert summary["layers"] == 14 and "lm_head" in summary["skipped"]
    assert summary["perplexity_after"] > 1 and summary["bytes"] == (out / "weight_only.safetensors").stat().st_size
    model = load_weight_only(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out)),
                             out / "weight_only.safetensors")  # fmt: skip
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Int4WeightOnlyLinear"


def test_pruning_and_joint_modes(lm_dir: str) -> None:
    common = [lm_dir, "--text", f"{lm_dir}/text.txt", "--window", "32", "--calibration-windows", "2",
              "--eval-windows", "1"]  # fmt: skip
    assert run([*common, "--method", "wanda", "--nm", "2:4"])["sparsity"] == 0.5
    joint = run([*common, "--method", "gptq", "--group-size", "32", "--nm", "2:4", "--no-eval"])
    assert joint["layers"] == 14 and "perplexity_after" not in joint
    # the console script's entry point exits 0 (sys.exit(main()) of a returned dict would exit 1)
    assert main([*common, "--method", "rtn", "--group-size", "32", "--no-eval"]) == 0


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--bits", "9"], "--bits must be in 2..8, got 9"),
        (["--group-size", "48"], "group_size`=48 does not divide the input width"),
        (["--method", "sparsegpt"], "--method sparsegpt needs --sparsity or --nm"),
        (["--calibration-windows", "50"], "fewer than --calibration-windows 50 + --eval-windows 12"),
        (["--text", "/nonexistent.txt"], "--text: no such file"),
    ],
)
def test_bad_arguments_exit_with_the_reason(lm_dir: str, extra, message, capsys) -> None:
    base = [lm_dir, "--window", "32"] + ([] if "--text" in extra else ["--text", f"{lm_dir}/text.txt"])
    with pytest.raises(SystemExit):
        run([*base, *extra])
    assert message in capsys.readouterr().err

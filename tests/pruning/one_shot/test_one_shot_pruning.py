"""One-shot pruning: the driver (methods, patterns, skipped layers, block-by-block processing, bad input) and the
OneShotPruning callback (zeros that stay zero through a fine-tune, resume)."""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import pytest
import torch
from conftest import QUIET
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.pruning.one_shot.calibration import InputStatistics
from lightning_compress.pruning.one_shot.one_shot_pruning import OneShotPruning
from lightning_compress.pruning.one_shot.prune import find_repeated_blocks, one_shot_prune
from lightning_compress.pruning.one_shot.sparsegpt import sparsegpt_prune
from lightning_compress.sparsity.nm_masks import is_nm_sparse

PATTERNS = [{"sparsity": 0.5}, {"n": 2, "m": 4}]
METHODS = ["magnitude", "wanda", "sparsegpt"]


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 16),
        nn.ReLU(), nn.Linear(16, 4),
    )  # fmt: skip


def _images(batches: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.zeros(16, dtype=torch.long)) for _ in range(batches)]


@pytest.mark.parametrize("pattern", PATTERNS, ids=["50%", "2:4"])
@pytest.mark.parametrize("method", METHODS)
def test_exact_sparsity_and_nm_after_each_method(method: str, pattern: dict[str, int]) -> None:
    net = _cnn()
    result = one_shot_prune(net, _images(), method=method, **pattern)
    nm = "n" in pattern
    # the first conv's reduction dim (1 x 3 x 3 = 9) cannot be 2:4
    assert set(result.masks) == {"2.weight", "5.weight", "7.weight"} | (set() if nm else {"0.weight"})
    assert result.skipped == ({"0.weight": "reduction dim 9 is not a multiple of m=4"} if nm else {})
    assert result.blocks is None and result.method == method and result.pattern == ("2:4" if nm else "50%")
    for name, mask in result.masks.items():
        weight = net.get_parameter(name)
        assert bool((weight[~mask] == 0).all()) and bool(torch.isfinite(weight).all())
        if nm:
            assert is_nm_sparse(weight, 2, 4) and mask.reshape(mask.shape[0], -1, 4).sum(-1).eq(2).all()
        else:
            assert int((~mask).sum()) == round(0.5 * weight.numel())
    assert result.sparsity == 0.5


class _Block(nn.Module):
    """A residual MLP block called with a keyword argument, as transformer layers are."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, hidden: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor]:
        return (hidden + scale * self.fc2(torch.relu(self.fc1(hidden))),)


class _Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(8, 16)
        self.layers = nn.ModuleList(_Block() for _ in range(3))
        self.head = nn.Linear(16, 4)
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h, scale=0.5)[0]
        return self.head(h)


def test_blocks_are_pruned_one_after_another() -> None:
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(32, 8, generator=g) for _ in range(2)]
    model = _Stack()
    assert find_repeated_blocks(model) == "layers"
    result = one_shot_prune(model, batches, method="sparsegpt", sparsity=0.5)
    assert result.blocks == "layers" and len(result.masks) == 8
    # the whole model ran only to capture block 0's inputs (twice: the embedding was pruned first) and for the head
    assert model.forwards == 2 * 2 + 2

    # reference: block i calibrated on the outputs of pruned blocks < i
    reference = _Stack()
    with torch.no_grad():

        def prune(layer: nn.Linear, run) -> None:
            stats = InputStatistics(layer, hessian=True)
            run()
            stats.remove()
            layer.weight.copy_(sparsegpt_prune(layer.weight, stats.hessian(), sparsity=0.5)[0])

        prune(reference.embed, lambda: [reference.embed(x) for x in batches])
        hidden = [reference.embed(x) for x in batches]
        for block in reference.layers:
            s1, s2 = InputStatistics(block.fc1, hessian=True), InputStatistics(block.fc2, hessian=True)
            for h in hidden:
                block(h, scale=0.5)  # both layers of a block are calibrated on the dense block
            s1.remove(), s2.remove()
            for layer, stats in ((block.fc1, s1), (block.fc2, s2)):
                layer.weight.copy_(sparsegpt_prune(layer.weight, stats.hessian(), sparsity=0.5)[0])
            hidden = [block(h, scale=0.5)[0] for h in hidden]
        prune(reference.head, lambda: [reference.head(h) for h in hidden])
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name

    # one pass of the dense model gives other weights: there later blocks do not see the earlier pruning
    single = _Stack()
    one_shot_prune(single, batches, method="sparsegpt", sparsity=0.5, blocks=None)
    assert not torch.allclose(single.layers[2].fc1.weight, model.layers[2].fc1.weight)


def test_tiny_bert_blocks_hooks_and_mode() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)  # fmt: skip
    model = BertForSequenceClassification(config).train()
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 64, (4, 10), generator=g),
                "attention_mask": torch.ones(4, 10, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long)}
               for _ in range(2)]  # fmt: skip
    result = one_shot_prune(model, batches, method="sparsegpt", n=2, m=4, skip_classifier=True)
    assert result.blocks == "bert.encoder.layer"
    assert len(result.masks) == 2 * 6 + 1 and "classifier.weight" not in result.masks  # 6 per layer, pooler
    assert all(is_nm_sparse(model.get_parameter(name), 2, 4) for name in result.masks)
    assert model.training  # the mode is restored
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())
    assert bool(torch.isfinite(model(**{k: v for k, v in batches[0].items()}).logits).all())


def test_padding_tokens_are_not_calibration_data() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)  # fmt: skip
    torch.manual_seed(0)
    padded_model = BertForSequenceClassification(config)
    alone_model = BertForSequenceClassification(config)
    alone_model.load_state_dict(padded_model.state_dict())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (2, 10), generator=g)
    mask = torch.ones(2, 10, dtype=torch.long)
    ids[1, 6:], mask[1, 6:] = 0, 0  # the second sentence has 6 tokens, padded to 10
    padded = [{"input_ids": ids, "attention_mask": mask}]
    alone = [
        {"input_ids": ids[:1], "attention_mask": mask[:1]},
        {"input_ids": ids[1:, :6], "attention_mask": mask[1:, :6]},
    ]
    a = one_shot_prune(padded_model, padded, method="wanda", sparsity=0.5, skip_classifier=True)
    b = one_shot_prune(alone_model, alone, method="wanda", sparsity=0.5, skip_classifier=True)
    assert a.masks.keys() == b.masks.keys() and all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)


def test_command_loads_a_lightning_checkpoint_of_a_classifier(tmp_path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    from lightning_compress.cli.oneshot import _load_classifier

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(tmp_path / "arch")
    trained = BertForSequenceClassification(config)
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "last.ckpt")
    loaded = _load_classifier(str(tmp_path / "arch"), str(tmp_path / "last.ckpt"), num_labels=2)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))


def test_skipped_layers_are_listed() -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.Embedding(3, 4))
    never_called = nn.Linear(8, 8)
    net.add_module("unused", never_called)
    pick = lambda module, fqn: isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding))  # noqa: E731
    result = one_shot_prune(
        net, [torch.randn(2, 4, 8, 8)], method="wanda", sparsity=0.5, filter_fn=pick, forward_fn=lambda m, b: m[:3](b)
    )
    assert list(result.masks) == ["2.weight"]
    assert result.skipped == {
        "0.weight": "Conv2d with groups=2 (only groups=1 is handled)",
        "3.weight": "Embedding is not a Linear, Conv1d or Conv2d layer",
        "unused.weight": "received no input during calibration (not called by the forward?)",
    }
    assert bool((never_called.weight != 0).all())


def test_magnitude_needs_no_data() -> None:
    net = _cnn()
    result = one_shot_prune(net, None, method="magnitude", sparsity=0.25)
    assert result.calibration_batches == 0 and result.sparsity == 0.25


def test_rank_deficient_calibration_warns_with_the_layer_name_and_gives_no_nans() -> None:
    net = nn.Sequential(nn.Linear(32, 8))
    with pytest.warns(UserWarning, match=r"^0\.weight: the Hessian is not positive definite"):
        one_shot_prune(net, [torch.randn(2, 32)], method="sparsegpt", sparsity=0.5, percdamp=0.0)
    assert bool(torch.isfinite(net[0].weight).all())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sparsity": 1.0}, r"`sparsity` must be a float in \[0, 1\), got 1.0"),
        ({"sparsity": -0.5}, r"`sparsity` must be a float in \[0, 1\), got -0.5"),
        ({"sparsity": 0.5, "method": "obs"}, "`method` can be magnitude, sparsegpt or wanda, got 'obs'"),
        ({"sparsity": 0.5, "dataloader": []}, "`dataloader` is empty: method='sparsegpt' needs calibration batches"),
        ({"sparsity": 0.5, "dataloader": None}, "`dataloader` must give calibration batches"),
        ({"sparsity": 0.5, "calibration_batches": 0}, "`calibration_batches` must be an int >= 1, got 0"),
        ({"sparsity": 0.5, "blocks": "nope"}, "`blocks` must be 'auto', None or the qualified name"),
        ({"n": 3, "m": 2}, r"`n` must be an int with 0 < n < m \(m=2\), got 3"),
    ],
)
def test_bad_input_fails_before_any_work(kwargs: dict[str, Any], match: str) -> None:
    net = _cnn()
    before = [p.clone() for p in net.parameters()]
    kwargs = {"dataloader": _images(1), **kwargs}
    with pytest.raises(ValueError, match=match):
        one_shot_prune(net, **kwargs)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))


def test_an_iterator_that_yields_nothing() -> None:
    with pytest.raises(ValueError, match="`dataloader` yielded no batch"):
        one_shot_prune(_cnn(), iter([]), method="wanda", sparsity=0.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_models_device() -> None:
    net = _cnn().cuda()
    result = one_shot_prune(net, _images(), method="sparsegpt", n=2, m=4)  # CPU batches are moved to the GPU
    assert all(mask.is_cuda for mask in result.masks.values())
    assert all(is_nm_sparse(net.get_parameter(name), 2, 4) for name in result.masks)


# ------------------------------------------------------------------------------------------------------- callback
class _Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
        self.zeros_at_first_step: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.zeros_at_first_step is None:
            self.zeros_at_first_step = float((self.net[0].weight == 0).float().mean())
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 16, generator=g)
    return DataLoader(TensorDataset(x, (x[:, :4].argmax(1))), batch_size=16)


@pytest.mark.parametrize("method,pattern", [("sparsegpt", {"sparsity": 0.5}), ("wanda", {"n": 2, "m": 4})])
def test_callback_prunes_at_fit_start_and_zeros_stay_through_the_fine_tune(method: str, pattern: dict) -> None:
    module = _Classifier()
    pruning = OneShotPruning(method=method, calibration_batches=4, verbose=0, **pattern)
    L.Trainer(max_epochs=2, callbacks=[pruning], **QUIET).fit(module, _loader())
    assert module.zeros_at_first_step == 0.5
    assert pruning.masks is not None and pruning.masks.sparsity() == 0.5
    for param, mask in zip(pruning.masks.params, pruning.masks.masks):
        assert bool((param[~mask] == 0).all()) and bool((param[mask] != 0).all())  # trained, zeros held
        if "n" in pattern:
            assert is_nm_sparse(param, 2, 4)


def test_callback_resume_restores_the_masks_without_pruning_again(tmp_path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = OneShotPruning(method="sparsegpt", sparsity=0.5, calibration_batches=2, verbose=0)
    module = _Classifier()
    trainer = L.Trainer(max_epochs=1, callbacks=[first, checkpoint], **{**QUIET, "enable_checkpointing": True})
    trainer.fit(module, _loader())
    masks = [mask.clone() for mask in first.masks.masks]

    resumed = OneShotPruning(
        method="sparsegpt", sparsity=0.5, calibration_batches=2, verbose=0, dataloader=[]
    )  # fmt: skip  (would fail if it pruned again)
    fresh = _Classifier()
    trainer = L.Trainer(max_epochs=2, callbacks=[resumed, ModelCheckpoint(dirpath=tmp_path / "2")],
                        **{**QUIET, "enable_checkpointing": True})  # fmt: skip
    trainer.fit(fresh, _loader(), ckpt_path=str(tmp_path / "last.ckpt"))
    assert all(torch.equal(a, b) for a, b in zip(masks, resumed.masks.masks))
    for param, mask in zip(resumed.masks.params, resumed.masks.masks):
        assert bool((param[~mask] == 0).all())


def test_callback_bad_arguments_are_listed_at_once() -> None:
    with pytest.raises(ValueError) as err:
        OneShotPruning(method="prune", sparsity=1.5, calibration_batches=0, verbose=3)
    message = str(err.value)
    for part in ("`method` can be magnitude, sparsegpt or wanda, got 'prune'",
                 r"`sparsity` must be a float in [0, 1), got 1.5", "`calibration_batches` must be an int >= 1, got 0",
                 "`verbose` can be 0, 1 or 2, got 3"):  # fmt: skip
        assert part in message


def test_callback_empty_train_loader() -> None:
    empty = DataLoader(TensorDataset(torch.zeros(0, 16), torch.zeros(0, dtype=torch.long)), batch_size=4)
    pruning = OneShotPruning(method="wanda", sparsity=0.5, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="`dataloader` is empty"):
            L.Trainer(max_epochs=1, callbacks=[pruning], **QUIET).fit(_Classifier(), empty)


@pytest.mark.slow
def test_command_prunes_the_offline_minilm(tmp_path) -> None:
    from lightning_compress.cli.oneshot import main
    from lightning_compress.models import offline_minilm_path

    summary = main([
        offline_minilm_path(), "--method", "wanda", "--nm", "2:4", "--calibration-batches", "1", "--batch-size", "8",
        "--no-eval", "--device", "cpu", "--output", str(tmp_path / "pruned"),
    ])  # fmt: skip
    assert summary["pattern"] == "2:4" and summary["blocks"] == "bert.encoder.layer" and summary["sparsity"] == 0.5
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    assert is_nm_sparse(reloaded.bert.encoder.layer[0].intermediate.dense.weight, 2, 4)

"""Training and evaluation modes of a PT2E-prepared graph, whose BatchNorm and Dropout ops do not follow
``.train()`` / ``.eval()`` once exported: the graph's flags are rewritten when the mode changes.

Example:
    >>> set_qat_mode(prepared, train=False)  # a graph from prepare_qat  # doctest: +SKIP
"""

from __future__ import annotations

import types
from typing import Optional

import torch
from torch import nn

__all__ = ["fake_quantizers", "install_mode_switches", "is_prepared", "observers", "set_qat_mode", "sync_qat_mode"]

MARK = "lightning_compress_qat"  # key in a prepared GraphModule's `meta` (kept by deepcopy): its mode state


def fake_quantizers(prepared: nn.Module) -> list[nn.Module]:
    """The torchao fake quantizers (weights and activations) of a prepared graph, in module order."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    return [m for m in prepared.modules() if isinstance(m, FakeQuantizeBase)]


def observers(prepared: nn.Module) -> list[nn.Module]:
    """The torchao observers and fake quantizers of a prepared graph (PTQ graphs hold observers only), in module
    order; a fake quantizer's own observer is listed too."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase
    from torchao.quantization.pt2e.observer import ObserverBase

    return [m for m in prepared.modules() if isinstance(m, (FakeQuantizeBase, ObserverBase))]


def is_prepared(module: nn.Module) -> bool:
    """Whether ``module`` is a graph prepared by :func:`~lightning_compress.prepare_qat` (or for PTQ)."""
    return isinstance(module, torch.fx.GraphModule) and MARK in module.meta


def install_mode_switches(prepared: torch.fx.GraphModule, train: bool = True) -> None:
    """Mark ``prepared`` as a graph whose modes this module switches, in ``train`` mode as exported; its
    ``.train()`` and ``.eval()`` then call :func:`set_qat_mode`."""
    prepared.meta[MARK] = {
        "train": train,
        "bn_train": train,
        "dropout_train": train,
        "bn_frozen": False,
        "observers_frozen": False,
    }
    prepared.train = types.MethodType(_train, prepared)  # type: ignore[method-assign]
    prepared.eval = types.MethodType(_eval, prepared)  # type: ignore[method-assign]


def set_qat_mode(
    prepared: torch.fx.GraphModule,
    train: bool,
    freeze_bn: Optional[bool] = None,
    freeze_observers: Optional[bool] = None,
) -> None:
    """Switch the BatchNorm and Dropout ops (attention dropout too) of a prepared graph between training and evaluation.

    Args:
        prepared: A graph from :func:`prepare_qat`.
        train: Training mode (batch statistics, live dropout) or evaluation mode.
        freeze_bn: When given, set whether BatchNorm stays in evaluation mode (running statistics, no updates) while
            training; left as it was when None.
        freeze_observers: When given, set whether the observers stop recording ranges (scales and zero points stay
            fixed) while training; left as it was when None. In evaluation mode the observers never record.

    The graph is rewritten (argument flags, no re-tracing) only when a mode actually changes.
    """
    state = prepared.meta[MARK]
    if freeze_bn is not None:
        state["bn_frozen"] = bool(freeze_bn)
    if freeze_observers is not None:
        state["observers_frozen"] = bool(freeze_observers)
    for fq in fake_quantizers(prepared):  # observers record ranges in training only: evaluation never moves scales
        fq.enable_observer(train and not state["observers_frozen"])
    want_bn = train and not state["bn_frozen"]
    if state["dropout_train"] != train or state["bn_train"] != want_bn:
        _set_training_flags(prepared, dropout=train, batchnorm=want_bn)
        state["dropout_train"], state["bn_train"] = train, want_bn
    state["train"] = train
    nn.Module.train(prepared, train)


_DROPOUT_OPS = {
    torch.ops.aten.dropout,
    torch.ops.aten.dropout_,
    torch.ops.aten.feature_dropout,
    torch.ops.aten.alpha_dropout,
    torch.ops.aten.feature_alpha_dropout,
}


def _set_training_flags(prepared: torch.fx.GraphModule, dropout: bool, batchnorm: bool) -> None:
    """Set the ``train`` argument of the dropout ops, the ``training`` argument of ``aten.batch_norm`` and the
    ``dropout_p`` of ``scaled_dot_product_attention`` (0 for evaluation, else the exported value) in the graph.

    This is what torchao's ``move_exported_model_to_eval`` does by matching traced patterns (about half a second per
    switch), done on the nodes directly; it also keeps each dropout's own ``p`` (torchao's rewrite resets it to 0.5).
    A BERT exported in training mode passes its attention dropout to SDPA as a constant, which torchao leaves alone;
    the exported value is kept in the node's ``meta``.
    """
    for node in prepared.graph.nodes:
        if node.op != "call_function":
            continue
        op = getattr(node.target, "_overloadpacket", None)
        if op in _DROPOUT_OPS and len(node.args) >= 3:
            node.args = (*node.args[:2], dropout, *node.args[3:])
        elif op is torch.ops.aten.batch_norm and len(node.args) >= 6:
            node.args = (*node.args[:5], batchnorm, *node.args[6:])
        elif op is torch.ops.aten.scaled_dot_product_attention:
            positional = len(node.args) > 4
            exported = node.meta.setdefault(
                "lightning_compress_dropout_p", node.args[4] if positional else node.kwargs.get("dropout_p", 0.0)
            )
            value = exported if dropout else 0.0
            if positional:
                node.args = (*node.args[:4], value, *node.args[5:])
            elif exported:
                node.kwargs = {**node.kwargs, "dropout_p": value}
    prepared.recompile()


def _train(self: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
    set_qat_mode(self, mode)
    return self


def _eval(self: torch.fx.GraphModule) -> torch.fx.GraphModule:
    set_qat_mode(self, False)
    return self


def sync_qat_mode(prepared: torch.fx.GraphModule) -> None:
    """Follow ``prepared.training`` (Lightning restores modes by assigning ``.training``, not by calling ``train``)."""
    if prepared.meta[MARK]["train"] != prepared.training:
        set_qat_mode(prepared, prepared.training)

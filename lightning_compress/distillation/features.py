"""Feature distillation: which student and teacher features to match, how to read them, and how to project widths.

A feature is named by the module path of a submodule of the network (its output, read by a forward hook; the first
tensor of a tuple output), or, for a Hugging Face model, by ``hidden_states.K`` (``K = 0`` is the embeddings' output,
``K = i + 1`` the output of layer ``i``) or ``attentions.K`` (the attention probabilities ``(B, heads, L, L)`` of layer
``K``; needs ``attn_implementation="eager"``), requested from the model's forward with ``output_hidden_states`` /
``output_attentions``. Names are relative to the network: the ``.model`` of a ``ClassificationModule``.

Where the widths differ, a learned linear map (no bias) takes the student's width to the teacher's: along the last
dimension, or along dimension 1 (channels) for 4-D feature maps ``(B, C, H, W)``. Every other dimension must agree.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> with FeatureCapture(net, ["1"]) as features:
    ...     _ = net(torch.randn(3, 4))
    >>> features["1"].shape
    torch.Size([3, 8])
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_compress.distillation.losses import FEATURE_LOSSES

__all__ = ["FeatureCapture", "FeaturePair", "WidthProjection", "available_features", "build_projection", "width_dim"]

_HF_FEATURE = re.compile(r"^(hidden_states|attentions)\.(\d+)$")


@dataclass(frozen=True)
class FeaturePair:
    """One student feature matched to one teacher feature.

    Args:
        student: A module path in the student network (``"features.4"``, ``"bert.encoder.layer.1"``) or a Hugging Face
            output (``"hidden_states.2"``, ``"attentions.1"``).
        teacher: The same, in the teacher network.
        weight: The pair's weight in the total loss, >= 0.
        loss: ``"mse"`` or ``"cosine"`` (see :func:`~lightning_compress.distillation.losses.feature_loss`).

    Raises:
        ValueError: For an empty name, a negative or non-finite weight or an unknown loss.

    Example:
        >>> FeaturePair("bert.encoder.layer.1", "bert.encoder.layer.3", weight=0.1)
        FeaturePair(student='bert.encoder.layer.1', teacher='bert.encoder.layer.3', weight=0.1, loss='mse')
    """

    student: str
    teacher: str
    weight: float = 1.0
    loss: str = "mse"

    def __post_init__(self) -> None:
        errors = []
        for side in ("student", "teacher"):
            value = getattr(self, side)
            if not isinstance(value, str) or not value:
                errors.append(f"`{side}` must be a non-empty module path or Hugging Face output name, got {value!r}")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            errors.append(f"`weight` must be a number >= 0, got {w!r}")
        if self.loss not in FEATURE_LOSSES:
            errors.append(f"`loss` can be {' or '.join(FEATURE_LOSSES)}, got {self.loss!r}")
        if errors:
            raise ValueError("; ".join(errors))

    @classmethod
    def of(cls, value: FeaturePair | Mapping[str, Any]) -> FeaturePair:
        """A pair from a pair or a mapping with the same keys (a Hydra list entry)."""
        if isinstance(value, FeaturePair):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"student", "teacher", "weight", "loss"}
            if unknown:
                raise ValueError(f"`features` entries take keys student, teacher, weight, loss; got {sorted(unknown)}")
            return cls(**{str(k): v for k, v in value.items()})
        raise TypeError(f"`features` entries must be FeaturePair or mappings, got {type(value).__name__}")


def _hf_layers(network: nn.Module) -> Optional[int]:
    """The layer count of a Hugging Face model (``config.num_hidden_layers``), None for other modules."""
    config = getattr(network, "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    return layers if isinstance(layers, int) else None


def available_features(network: nn.Module) -> list[str]:
    """Every feature name ``network`` offers: its submodule paths, then ``hidden_states.K`` / ``attentions.K`` for a
    Hugging Face model.

    Example:
        >>> available_features(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
        ['0', '1']
    """
    names = [name for name, _ in network.named_modules() if name]
    layers = _hf_layers(network)
    if layers is not None:
        names += [f"hidden_states.{k}" for k in range(layers + 1)] + [f"attentions.{k}" for k in range(layers)]
    return names


def check_feature_name(network: nn.Module, name: str, argument: str) -> None:
    """Raises a ValueError naming ``argument``, ``name`` and the available names if ``network`` has no such feature."""
    match = _HF_FEATURE.match(name)
    layers = _hf_layers(network)
    if match and layers is not None:
        kind, k = match.group(1), int(match.group(2))
        if k <= (layers if kind == "hidden_states" else layers - 1):
            return
    elif not match:
        try:
            network.get_submodule(name)
            return
        except AttributeError:
            pass
    raise ValueError(
        f"`{argument}` names a feature that {type(network).__name__} does not have: {name!r}; available: "
        + ", ".join(available_features(network))
    )


def _first_tensor(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, Sequence) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"a feature module must return a tensor or a tuple starting with one, got {type(output).__name__}")


class FeatureCapture:
    """A context manager that records the named features of ``network`` during the forward passes inside it.

    Module features are read by forward hooks; Hugging Face outputs by asking the network's forward for
    ``output_hidden_states`` / ``output_attentions`` (a keyword-argument pre-hook) and reading its output. Hooks are
    removed on exit; the dict holds the last value of each feature.

    Args:
        network: The module whose features to read.
        names: Feature names (see the module docstring); checked with :func:`check_feature_name` beforehand.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
        >>> with FeatureCapture(net, ["0"]) as features:
        ...     _ = net(torch.randn(1, 1, 5, 5))
        >>> features["0"].shape
        torch.Size([1, 2, 3, 3])
    """

    def __init__(self, network: nn.Module, names: Iterable[str]) -> None:
        self.network = network
        self.names = list(dict.fromkeys(names))
        self.features: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> dict[str, Tensor]:
        self.features = {}
        hf = {name: _HF_FEATURE.match(name) for name in self.names}
        hf = {name: m for name, m in hf.items() if m is not None}
        for name in self.names:
            if name not in hf:
                module = self.network.get_submodule(name)
                self._handles.append(module.register_forward_hook(self._module_hook(name)))
        if hf:
            flags = {f"output_{m.group(1)}": True for m in hf.values()}

            def ask(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                return args, {**kwargs, **flags}

            def read(module: nn.Module, args: tuple, output: Any) -> None:
                for name, m in hf.items():
                    values = getattr(output, m.group(1), None)
                    k = int(m.group(2))
                    if not values or values[k] is None:
                        hint = (
                            ' (load the model with attn_implementation="eager")' if m.group(1) == "attentions" else ""
                        )
                        raise ValueError(f"{type(module).__name__} returned no {m.group(1)} for feature {name!r}{hint}")
                    self.features[name] = values[k]

            self._handles.append(self.network.register_forward_pre_hook(ask, with_kwargs=True))
            self._handles.append(self.network.register_forward_hook(read))
        return self.features

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _module_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self.features[name] = _first_tensor(output)

        return hook


def width_dim(feature: Tensor) -> int:
    """The dimension a projection maps: 1 (channels) for 4-D feature maps ``(B, C, H, W)``, else the last one."""
    return 1 if feature.dim() == 4 else -1


class WidthProjection(nn.Module):
    """A learned linear map (no bias) of one dimension of a tensor, from ``in_features`` to ``out_features`` wide.

    Shapes:
        ``(..., in_features)`` -> ``(..., out_features)`` with ``dim=-1``; ``(B, in_features, H, W)`` ->
        ``(B, out_features, H, W)`` with ``dim=1`` (a 1x1 convolution).

    Example:
        >>> WidthProjection(8, 16, dim=1)(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 16, 5, 5])
    """

    def __init__(self, in_features: int, out_features: int, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.dim in (-1, x.dim() - 1):
            return self.linear(x)
        return self.linear(x.movedim(self.dim, -1)).movedim(-1, self.dim)


def build_projection(student: Tensor, teacher: Tensor, pair: FeaturePair) -> nn.Module:
    """``nn.Identity`` if the two features have the same shape, else a :class:`WidthProjection` of the width.

    Args:
        student: A student feature ``(B, ...)``.
        teacher: The matching teacher feature, for the same examples.
        pair: Named in the error message.

    Raises:
        ValueError: If the features differ in anything but the width (dimension count, sequence length, spatial size).

    Example:
        >>> build_projection(torch.zeros(2, 5, 8), torch.zeros(2, 5, 32), FeaturePair("a", "b"))
        WidthProjection(
          (linear): Linear(in_features=8, out_features=32, bias=False)
        )
    """
    if student.shape == teacher.shape:
        return nn.Identity()
    dim = width_dim(teacher)
    s_rest = list(student.shape)
    t_rest = list(teacher.shape)
    if student.dim() == teacher.dim() and student.dim() >= 2:
        s_rest.pop(dim)
        t_rest.pop(dim)
    if student.dim() != teacher.dim() or student.dim() < 2 or s_rest != t_rest:
        which = "channels (dim 1)" if dim == 1 else "last dimension"
        raise ValueError(
            f"cannot build a projection for feature pair student {pair.student!r} {tuple(student.shape)} -> teacher "
            f"{pair.teacher!r} {tuple(teacher.shape)}: a linear projection maps the {which} only, so every other "
            "dimension must agree; pick layers of the same resolution / sequence length"
        )
    return WidthProjection(student.shape[dim], teacher.shape[dim], dim)

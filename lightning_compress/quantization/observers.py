"""Calibration for post-training quantization: which observer turns the activations seen on calibration batches into
a scale and zero point, and the quantization configuration (static or dynamic INT8) built around it.

Weights are always int8 symmetric per output channel (``PerChannelMinMaxObserver``: the range of a weight is known,
there is nothing to calibrate); activations are uint8 affine per tensor, as in the QAT path. The observers
(:data:`OBSERVERS`):

* ``"minmax"``: the smallest and largest value seen over all calibration batches (one outlier widens the range);
* ``"moving_average"``: the per-batch min / max, averaged with ``averaging_constant=0.01`` (torchao's default);
* ``"histogram"`` (default; torchao's PTQ default): a 2048-bin histogram of all batches, then the range whose
  quantization minimises the L2 error (it clips rare outliers when that costs less than the rounding they cause);
* ``"percentile"``: the same histogram, clipped at the ``percentile`` and ``100 - percentile`` quantiles
  (TensorRT's percentile calibration).

Example:
    >>> config = quantization_config("percentile", percentile=99.9)
    >>> config.input_activation.qscheme
    torch.per_tensor_affine
"""

from __future__ import annotations

import functools
from typing import Any

import torch

__all__ = ["OBSERVERS", "SCHEMES", "percentile_observer", "percentile_range", "quantization_config"]

OBSERVERS = ("histogram", "minmax", "moving_average", "percentile")
SCHEMES = ("static", "dynamic")


def _percentile_observer_class() -> type:
    from torchao.quantization.pt2e.observer import HistogramObserver

    class _PercentileObserver(HistogramObserver):
        """A :class:`HistogramObserver` whose range is clipped at quantiles of the recorded histogram.

        Args:
            percentile: The upper quantile, in percent (``99.99``: the top 0.01 % of values saturate; the lower bound
                is the ``100 - percentile`` quantile). 100 keeps the full recorded range.
            **kwargs: As for ``HistogramObserver``.
        """

        def __init__(self, percentile: float = 99.99, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.percentile = float(percentile)

        def _non_linear_param_search(self) -> tuple[torch.Tensor, torch.Tensor]:
            return percentile_range(self.histogram, self.min_val, self.max_val, self.percentile)

    _PercentileObserver.__name__ = _PercentileObserver.__qualname__ = "PercentileObserver"
    return _PercentileObserver


def percentile_range(
    histogram: torch.Tensor, min_val: torch.Tensor, max_val: torch.Tensor, percentile: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``100 - percentile`` and ``percentile`` quantiles of a histogram over ``[min_val, max_val]``.

    Args:
        histogram: Counts ``(bins,)`` of equal-width bins spanning ``[min_val, max_val]``.
        min_val: Scalar lower edge of the first bin.
        max_val: Scalar upper edge of the last bin.
        percentile: The upper quantile in percent, in ``(50, 100]``.

    Returns:
        ``(low, high)`` scalar tensors: the lower edge of the bin where the cumulative count first exceeds the lower
        quantile, and the upper edge of the bin where it first reaches the upper one.

    Example:
        >>> counts, low, high = torch.tensor([1.0, 98.0, 1.0]), torch.tensor(0.0), torch.tensor(3.0)
        >>> [float(v) for v in percentile_range(counts, low, high, 99.0)]  # 1 % in each outer bin: both clipped
        [1.0, 2.0]
        >>> [float(v) for v in percentile_range(counts, low, high, 99.5)]
        [0.0, 3.0]
    """
    total = histogram.sum()
    if total <= 0 or percentile >= 100:
        return min_val, max_val
    bins = histogram.numel()
    width = (max_val - min_val) / bins
    cdf = histogram.cumsum(0) / total
    tail = (100.0 - percentile) / 100.0
    low_bin = int(torch.searchsorted(cdf, torch.tensor(tail, dtype=cdf.dtype), right=True))
    high_bin = int(torch.searchsorted(cdf, torch.tensor(1.0 - tail, dtype=cdf.dtype)))
    low_bin, high_bin = min(low_bin, bins - 1), min(max(high_bin, low_bin), bins - 1)
    return min_val + width * low_bin, min_val + width * (high_bin + 1)


@functools.cache
def percentile_observer() -> type:
    """The ``PercentileObserver`` class: torchao's ``HistogramObserver`` whose range is :func:`percentile_range` of
    its histogram (built on first use, as torchao is imported lazily).

    Example:
        >>> observer = percentile_observer()(percentile=99.0)
        >>> _ = observer(torch.cat([torch.zeros(990), torch.full((10,), 100.0)]))
        >>> float(observer.calculate_qparams()[0]) < 100 / 255  # the 1 % of outliers saturate
        True
    """
    return _percentile_observer_class()


def _activation_observer(observer: str, percentile: float) -> Any:
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

    eps = {"eps": 2**-12}  # as torchao's x86 default: no scale below 2^-12
    if observer == "minmax":
        return MinMaxObserver.with_args(**eps)
    if observer == "moving_average":
        return MovingAverageMinMaxObserver.with_args(**eps)
    if observer == "histogram":
        return HistogramObserver.with_args(**eps)
    return percentile_observer().with_args(percentile=percentile, **eps)


def quantization_config(observer: str = "histogram", scheme: str = "static", percentile: float = 99.99) -> Any:
    """The x86 Inductor quantizer's INT8 configuration for post-training quantization with ``observer``.

    Args:
        observer: One of :data:`OBSERVERS` (static scheme; the dynamic scheme measures each batch at run time).
        scheme: ``"static"``: activation scales fixed by calibration; ``"dynamic"``: each activation's scale is
            computed from the tensor at run time (``choose_qparams``), Linear layers only (the x86 quantizer's
            dynamic recipe), weights as for static.
        percentile: For ``observer="percentile"``: the upper quantile in percent, in ``(50, 100]``.

    Returns:
        A torchao ``QuantizationConfig``.

    Raises:
        ValueError: On an unknown observer or scheme, or a percentile outside ``(50, 100]``.

    Example:
        >>> quantization_config("minmax").input_activation.dtype
        torch.uint8
    """
    from lightning_compress.core.validation import ArgumentErrors

    errors = ArgumentErrors()
    errors.one_of("observer", observer, OBSERVERS)
    errors.one_of("scheme", scheme, SCHEMES)
    errors.interval("percentile", percentile, 50, 100, "(]")
    errors.raise_if_any()
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec

    default = xiq.get_default_x86_inductor_quantization_config(is_qat=False, is_dynamic=scheme == "dynamic")
    if scheme == "dynamic":
        return default
    act = default.input_activation
    spec = QuantizationSpec(
        dtype=act.dtype,
        quant_min=act.quant_min,
        quant_max=act.quant_max,
        qscheme=act.qscheme,
        is_dynamic=False,
        observer_or_fake_quant_ctr=_activation_observer(observer, percentile),
    )
    return QuantizationConfig(spec, spec, default.weight, default.bias, False)

"""What a model or a run holds: the compression report (sparsity, 2:4, quantization, bytes per storage form), the logs
of runs and sweeps, and their figures.
"""

from lightning_compress.analysis.report import CompressionReport, LayerRow, compression_report, sparsity_report
from lightning_compress.analysis.run_logs import metric_series, sweep_jobs

__all__ = ["CompressionReport", "LayerRow", "compression_report", "metric_series", "sparsity_report", "sweep_jobs"]

"""What each technique gains on this machine: inference paths timed side by side (model and GEMM benchmarks), the
machine they ran on, the result rows and files, and the advice derived from them.
"""

from lightning_compress.bench.advice import advise
from lightning_compress.bench.gemm_benchmark import benchmark_gemm
from lightning_compress.bench.machine import LOW_PRECISION_FLAGS, cpu_model, machine_info
from lightning_compress.bench.model_benchmark import ALL_PATHS, benchmark_model, gemm_flops, prune_unstructured
from lightning_compress.bench.result_files import write_results
from lightning_compress.bench.results import BenchResult, Unavailable, format_table
from lightning_compress.bench.timing import measure, measure_peak_memory

__all__ = [
    "ALL_PATHS",
    "LOW_PRECISION_FLAGS",
    "BenchResult",
    "Unavailable",
    "advise",
    "benchmark_gemm",
    "benchmark_model",
    "cpu_model",
    "format_table",
    "gemm_flops",
    "machine_info",
    "measure",
    "measure_peak_memory",
    "prune_unstructured",
    "write_results",
]

"""Files a compressed model is written to: the library's compressed format (bitmask + values, optionally INT8)."""

from lightning_compress.export.compressed_format import load_compressed, save_compressed

__all__ = ["load_compressed", "save_compressed"]

"""Crafted files for the security tests: pickles that create a marker file when unpickled, and .pt2 archives with
pickled entries. A test asserts the marker does not exist after a refused load (no code ran), and, where the library
offers the opt-in, that it does exist after ``allow_pickle=True`` (so the crafted file really runs code: the first
assertion can fail)."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


class Marker:
    """Unpickling this object calls ``open(path, "w")``, which creates the marker file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def crafted_torch_file(path: Path, marker: Path, wrap: Callable[[Any], Any] = lambda m: m) -> Path:
    """A ``torch.save`` file holding ``wrap(Marker(marker))`` (e.g. inside a checkpoint's state dict)."""
    torch.save(wrap(Marker(marker)), path)
    return path


def crafted_pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps(Marker(marker))


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def float_program_bytes() -> bytes:
    """A small float ``torch.export`` program as ``.pt2`` bytes (plain tensors: loads safely)."""
    torch.manual_seed(0)
    program = torch.export.export(nn.Sequential(nn.Linear(4, 3)).eval(), (torch.randn(2, 4),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _rewrite(data: bytes, change: Callable[[str, dict[str, bytes]], None]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    root = next(n for n in entries if n.endswith("archive_format"))[: -len("archive_format")]
    change(root, entries)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return out.getvalue()


def crafted_pt2(path: Path, marker: Path, how: str) -> Path:
    """A ``.pt2`` archive whose ``how`` entry unpickles a :class:`Marker`:

    - ``"pickled_weight"``: a weight stored with ``use_pickle`` (as torch does for tensor subclasses);
    - ``"sample_inputs"``: sample inputs that ``weights_only=True`` refuses (``torch.export.load`` then retries with
      ``weights_only=False``);
    - ``"opaque_constant"``: a constant stored as a pickled opaque object.
    """

    def change(root: str, entries: dict[str, bytes]) -> None:
        if how == "pickled_weight":
            config_name = root + "data/weights/model_weights_config.json"
            config = json.loads(entries[config_name])
            fqn = next(iter(config["config"]))
            config["config"][fqn]["use_pickle"] = True
            entries[root + "data/weights/" + config["config"][fqn]["path_name"]] = _torch_bytes(Marker(marker))
            entries[config_name] = json.dumps(config).encode()
        elif how == "sample_inputs":
            entries[root + "data/sample_inputs/model.pt"] = _torch_bytes(Marker(marker))
        elif how == "opaque_constant":
            config_name = root + "data/constants/model_constants_config.json"
            config = {"config": {"evil": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                          "tensor_meta": None}}}  # fmt: skip
            entries[config_name] = json.dumps(config).encode()
            entries[root + "data/constants/opaque_obj_0"] = crafted_pickle_bytes(marker)
        else:
            raise ValueError(how)

    path.write_bytes(_rewrite(float_program_bytes(), change))
    return path


PT2_ATTACKS = ("pickled_weight", "sample_inputs", "opaque_constant")

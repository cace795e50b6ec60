"""Outcome of bad and crafted files on every file loader of issue 16 (clear / vague / silent / CODE RAN).

clear: a ValueError / FileNotFoundError whose message names the file; vague: any other exception, or a message without
the file; silent: it loaded; CODE RAN: a crafted pickle created its marker file. Run from the repository root:

    .venv/bin/python experiments/file_safety/count_cases.py            # this tree
    git worktree add --detach /tmp/old 7626f63
    PYTHONPATH=/tmp/old .venv/bin/python experiments/file_safety/count_cases.py   # the tree before the fix
"""

# ruff: noqa: E402  (the crafted-file helpers of the tests are put on the path first)
import contextlib
import io
import random
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "security"))
import torch
from crafted_files import PT2_ATTACKS, Marker, crafted_pt2, float_program_bytes

import lightning_compress

print("tree:", Path(lightning_compress.__file__).parent.parent, file=sys.stderr)
from lightning_compress.cli.model_spec import load_model
from lightning_compress.cli.report import load_for_report
from lightning_compress.core.checkpoints import read_state_dict
from lightning_compress.distillation.teacher import load_teacher
from lightning_compress.distillation.teacher_cache import TeacherCache
from lightning_compress.export.compressed_format import load_compressed, save_compressed
from lightning_compress.models import SmallCNN
from lightning_compress.quantization.serialization import load_quantized

warnings.simplefilter("ignore")
d = Path(tempfile.mkdtemp())


def ckpt_bytes():
    b = io.BytesIO()
    torch.save({"state_dict": {f"model.{k}": v for k, v in SmallCNN().state_dict().items()}}, b)
    return b.getvalue()


def compressed_bytes():
    p = d / "v.bin"
    save_compressed(SmallCNN().state_dict(), p)
    return p.read_bytes()


LOADERS = {
    "load_compressed": (".lc", compressed_bytes, load_compressed),
    "load_quantized": (".pt2", float_program_bytes, lambda p: load_quantized(p, compile=False)),
    "load_teacher": (".ckpt", ckpt_bytes, lambda p: load_teacher(p, teacher_model=SmallCNN())),
    "read_state_dict": (".ckpt", ckpt_bytes, read_state_dict),
    "load_model --checkpoint": (
        ".ckpt",
        ckpt_bytes,
        lambda p: load_model("lightning_compress.models:SmallCNN", str(p)),
    ),
    "load_model --model": (".pt", float_program_bytes, lambda p: load_model(str(p))),
    "load_model --model .pt2": (".pt2", float_program_bytes, lambda p: load_model(str(p))),
    "lc-report": (".ckpt", ckpt_bytes, lambda p: load_for_report(str(p))),
}


def bad(kind, path, valid):
    if kind == "missing":
        return path
    data = {
        "empty": b"",
        "random": b"\x13\x37" + random.Random(0).randbytes(500),
        "text": b"name,value\n1,2\n",
        "json": b'{"model": "resnet18"}',
        "truncated": valid[: len(valid) // 2],
    }.get(kind)
    if kind == "foreign_zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes/readme.txt", "x")
    else:
        path.write_bytes(data)
    return path


def outcome(call, path, marker=None):
    try:
        call()
        res = "silent"
    except (ValueError, FileNotFoundError) as e:
        res = "clear" if str(path) in str(e) else "vague"
    except BaseException:
        res = "vague"
    if marker is not None and marker.exists():
        res = "CODE RAN"
    return res


rows = []
for name, (suffix, valid, call) in LOADERS.items():
    v = valid()
    for kind in ("missing", "empty", "random", "foreign_zip", "text", "json", "truncated"):
        p = bad(kind, d / f"{name.replace(' ', '_')}-{kind}{suffix}", v)
        rows.append((name, kind, outcome(lambda: call(p), p)))
# flipped byte in a compressed file: silent if it loads
v = compressed_bytes()
p = d / "flip.lc"
b = bytearray(v)
b[-3] ^= 0x10
p.write_bytes(bytes(b))
rows.append(("load_compressed", "flipped byte", outcome(lambda: load_compressed(p), p)))


# crafted files
def crafted(path, wrap):
    torch.save(wrap(Marker(path.with_suffix(".marker"))), path)
    return path, path.with_suffix(".marker")


ck = lambda m: {"state_dict": {"model.features.0.weight": m}}
for name, wrap, call in [
    ("load_teacher", lambda m: m, lambda p: load_teacher(p)),
    ("load_teacher checkpoint", ck, lambda p: load_teacher(p, teacher_model=SmallCNN())),
    ("lc-report .pt", lambda m: m, lambda p: load_for_report(str(p))),
    ("lc-report .ckpt", ck, lambda p: load_for_report(str(p))),
    ("load_model --model .pt", lambda m: m, lambda p: load_model(str(p))),
    ("load_model --checkpoint", ck, lambda p: load_model("lightning_compress.models:SmallCNN", str(p))),
    (
        "load_compressed .lcz",
        lambda m: {"format": "lightning_compress.compressed/1", "tensors": {"w": m}},
        load_compressed,
    ),
]:
    p, m = crafted(d / f"crafted-{name.replace(' ', '_')}.pt", wrap)
    rows.append((name, "crafted pickle", outcome(lambda: call(p), p, m)))
for how in PT2_ATTACKS:
    for name, call in [
        ("load_quantized", lambda p: load_quantized(p, compile=False)),
        ("lc-report", lambda p: load_for_report(str(p))),
        ("load_model --model .pt2", lambda p: load_model(str(p))),
    ]:
        m = d / f"{how}-{name}.marker"
        p = crafted_pt2(d / f"{how}-{name.replace(' ', '_')}.pt2", m, how)
        with contextlib.redirect_stderr(io.StringIO()):
            rows.append((name, f"crafted .pt2 ({how})", outcome(lambda: call(p), p, m)))
# run folder configs
for case, yaml in {
    "builtins.open": "  _target_: builtins.open\n  _args_: ['{m}', 'w']",
    "nested builtins.open": "  _target_: torch.nn.Sequential\n  _args_:\n"
    "    - _target_: builtins.open\n      _args_: ['{m}', 'w']",
    "nested torch.load": "  _target_: torch.nn.Sequential\n  _args_:\n"
    "    - _target_: torch.load\n      f: '{p}'\n      weights_only: false",
}.items():
    run = d / f"run-{case.replace(' ', '_')}"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    m = run / "marker"
    evil = run / "evil.pt"
    torch.save(Marker(m), evil)
    (run / ".hydra" / "config.yaml").write_text(
        "model:\n" + yaml.format(m=m, p=evil) + "\n  num_classes: 10\ndata:\n  _target_: torch.nn.Identity\n"
    )
    torch.save({"state_dict": {}}, run / "checkpoints" / "last.ckpt")
    rows.append(("load_model run folder", f"config {case}", outcome(lambda: load_model(str(run)), run, m)))
run = d / "run-ckpt"
(run / ".hydra").mkdir(parents=True)
(run / "checkpoints").mkdir()
m = run / "marker"
(run / ".hydra" / "config.yaml").write_text(
    "model:\n  _target_: lightning_compress.models.SmallCNN\n  num_classes: 10\n"
)
torch.save(ck(Marker(m)), run / "checkpoints" / "last.ckpt")
rows.append(("load_model run folder", "crafted checkpoint", outcome(lambda: load_model(str(run)), run, m)))
# teacher cache: planted pickle under the computed name (both suffixes)
for suffix in (".pt", ".safetensors"):
    c = d / f"cache{suffix}"
    c.mkdir()
    m = c / "marker"
    torch.save({"fingerprint": "fp", "keys": Marker(m)}, c / f"teacher-logits-fp.rank0{suffix}")

    def load():
        n = TeacherCache(c, "fp").load()
        if n == 0:
            raise ValueError(f"ignored {c}")

    rows.append(("TeacherCache.load", f"planted pickle{suffix}", outcome(load, c, m)))
from collections import Counter

for r in rows:
    print(" | ".join(r))
print(dict(Counter(r[2] for r in rows)), len(rows))

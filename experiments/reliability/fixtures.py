"""The files the bad-input cases are given: damaged, foreign and crafted files, and two tiny ``lc-train`` runs.

:data:`FIXTURE_CODE` runs in a subprocess with the checkout under test first on ``PYTHONPATH`` (its own
``save_compressed``, its own ``lc-train``); :func:`prepare_case` makes what one case needs in its own folder.

File names are chosen so that no word a clear message must hold ("empty", "missing", ...) appears in a path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# lc-train settings small enough for a case: two of the digits' batches, one epoch, no bars.
TINY_TRAIN = (
    "data=digits",
    "model=cnn_digits",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=4",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
)

# The payload of every crafted file: it writes the file $LC_BAD_MARKER names, in whatever process unpickles it.
PAYLOAD = "import os; open(os.environ['LC_BAD_MARKER'], 'w').write('code ran')"

FIXTURE_CODE = r"""
import io, json, os, random, shutil, struct, subprocess, sys, zipfile
from pathlib import Path

import torch
from torch import nn

fix, checkout = Path(sys.argv[1]), Path(sys.argv[2])
import lightning_compress as lc
from lightning_compress.models import SmallCNN

here = Path(lc.__file__).resolve().parent.parent
assert here == checkout, f"lightning_compress comes from {here}, not from the checkout {checkout}"
PAYLOAD = %(payload)r
TINY_TRAIN = %(tiny)r

(fix / "blank.pt").write_bytes(b"")
(fix / "blank.csv").write_bytes(b"")
(fix / "noise.bin").write_bytes(random.Random(0).randbytes(4096))
(fix / "notes.txt").write_text("These are notes, not weights.\n")
(fix / "conf.json").write_text(json.dumps({"weights": [1, 2, 3]}))
with zipfile.ZipFile(fix / "other.zip", "w") as z:
    z.writestr("readme.txt", "someone else's archive")


class Crafted:
    def __reduce__(self):
        return (exec, (PAYLOAD,))


torch.save(Crafted(), fix / "crafted.pt")
shutil.copy(fix / "crafted.pt", fix / "crafted.lcz")
torch.save({"state_dict": {"model.0.weight": torch.ones(2, 2)}, "extra": Crafted()}, fix / "crafted.ckpt")

# a torch.export program whose weight entry is a pickle (torch.export.load unpickles such entries)
program = torch.export.export(nn.Linear(2, 2), (torch.randn(1, 2),))
torch.export.save(program, fix / "plain.pt2")
buffer = io.BytesIO()
torch.save(Crafted(), buffer)
with zipfile.ZipFile(fix / "plain.pt2") as src, zipfile.ZipFile(fix / "crafted.pt2", "w") as dst:
    for info in src.infolist():
        data = src.read(info.filename)
        if info.filename.endswith("model_weights_config.json"):
            config = json.loads(data)
            config["config"]["weight"]["use_pickle"] = True
            data = json.dumps(config).encode()
        elif info.filename.endswith("data/weights/weight_0"):
            data = buffer.getvalue()
        dst.writestr(info.filename, data)

cnn = SmallCNN(channels=(16, 32), hidden=64, image_size=8)
torch.save(cnn.state_dict(), fix / "state.pt")
(fix / "cut.pt").write_bytes((fix / "state.pt").read_bytes()[: (fix / "state.pt").stat().st_size // 2])
torch.save(nn.Linear(3, 2).state_dict(), fix / "linear_state.pt")
(fix / "tiny.py").write_text("import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Flatten(), "
                             "torch.nn.Linear(64, 10))\n")

# the compressed format: a tensor whose values are easy to find in the file, and damaged copies of it
values = torch.arange(1.0, 257.0).reshape(16, 16)
lc.save_compressed({"w": values}, fix / "packed.lcz")
raw = bytearray((fix / "packed.lcz").read_bytes())
at = bytes(raw).find(struct.pack("<4f", 100.0, 101.0, 102.0, 103.0))
at = at + 2 if at >= 0 else len(raw) // 2
raw[at] ^= 0x10
(fix / "flipped.lcz").write_bytes(bytes(raw))
(fix / "cut.lcz").write_bytes((fix / "packed.lcz").read_bytes()[: (fix / "packed.lcz").stat().st_size // 2])


def train(folder, *extra):
    cmd = [sys.executable, "-m", "lightning_compress.cli.train", *TINY_TRAIN, f"hydra.run.dir={folder}", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=fix)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


train(fix / "run")
train(fix / "gmp_run", "compression=gmp", "compression.gmp.update_every_n_steps=1", "trainer.max_epochs=2",
      "trainer.log_every_n_steps=1", "compression.gmp.final_sparsity=0.9")

try:
    from lightning_compress.models import offline_minilm_path

    (fix / "minilm.txt").write_text(offline_minilm_path())
except Exception:  # noqa: BLE001 - the lc-oneshot cases then fail, and say so
    pass

import yaml

def variant(name, edit=None, drop_checkpoints=False):
    folder = fix / name
    shutil.copytree(fix / "run", folder)
    if drop_checkpoints:
        shutil.rmtree(folder / "checkpoints")
    if edit is not None:
        config = folder / ".hydra" / "config.yaml"
        edit(config)

def exec_data(config):
    cfg = yaml.safe_load(config.read_text())
    cfg["data"] = {"_target_": "builtins.exec", "_args_": [PAYLOAD]}
    config.write_text(yaml.safe_dump(cfg))

def nested_exec(config):
    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["num_classes"] = 10
    cfg["model"]["hidden"] = {"_target_": "builtins.eval", "_args_": [f"exec({PAYLOAD!r}) or 64"]}
    config.write_text(yaml.safe_dump(cfg))

variant("exec_run", exec_data)
variant("nested_run", nested_exec)
variant("noise_run", lambda config: config.write_bytes((fix / "noise.bin").read_bytes()))
variant("bare_run", drop_checkpoints=True)
(fix / "multirun").mkdir()
shutil.copytree(fix / "run", fix / "multirun" / "0")

# a teacher cache folder for the fingerprint "f00d", with damaged and crafted files under its names
for name, source in (("noise_cache", "noise.bin"), ("crafted_cache", "crafted.pt")):
    (fix / name).mkdir()
    for suffix in (".pt", ".safetensors"):  # the file name before issue 16, and after it
        shutil.copy(fix / source, fix / name / f"teacher-logits-f00d.rank0{suffix}")
""" % {"payload": PAYLOAD, "tiny": TINY_TRAIN}  # noqa: UP031


def _copy_run(fix: Path, tmp: Path, source: str, into: str) -> None:
    shutil.copytree(fix / source, tmp / into)


# per-case preparation, by the name a case gives in `setup`
SETUPS = {
    # an earlier run of the task `train` in the folder lc-train runs in (what `ckpt_path=last` should find)
    "earlier_run": lambda fix, tmp: _copy_run(fix, tmp, "run", "outputs/train/2000-01-01_00-00-00"),
}


def prepare_case(case, fix: Path, tmp: Path) -> None:
    """Makes what ``case`` needs in its folder ``tmp`` (nothing for most cases)."""
    if case.setup:
        SETUPS[case.setup](fix, tmp)

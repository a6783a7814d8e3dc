"""Build a tiny but complete classification bundle in a temporary folder.

No placeholder bundle ships with mimtl; the bundle tooling is tested on this one instead. It is
a real bundle: it trains, evaluates, infers, exports and passes ``mimtl verify``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

SIZE = 32

NETWORK = """
network_def:
  _target_: DenseNet
  spatial_dims: 2
  in_channels: 1
  out_channels: '@num_classes'
  init_features: 8
  growth_rate: 4
  block_config: [2, 2]
  bn_size: 2
"""

TRAIN = """
bundle_root: .
ckpt_dir: $@bundle_root + '/models'
output_dir: $@bundle_root + '/eval'
dataset_dir: $@bundle_root + '/data'
datalist: $@dataset_dir + '/datalist.json'
device: $torch.device('cpu')
seed: 0
val_interval: 1
num_classes: 2
__NETWORK__
network: $@network_def.to(@device)
loss: {_target_: torch.nn.CrossEntropyLoss}
optimizer: {_target_: torch.optim.Adam, params: "$@network.parameters()", lr: 0.001}
transforms:
- {_target_: LoadImaged, keys: image, ensure_channel_first: true}
- {_target_: ScaleIntensityd, keys: image}
- {_target_: EnsureTyped, keys: image}
train:
  preprocessing: {_target_: Compose, transforms: '@transforms'}
  dataset:
    # cached, as the shipped bundles do: a film the reading chain refuses stops the run before the first epoch
    _target_: CacheDataset
    progress: false
    data: {_target_: mimtl.data.datalist.load_datalist, path: '@datalist', data_list_key: training}
    transform: '@train::preprocessing'
  dataloader: {_target_: DataLoader, dataset: '@train::dataset', batch_size: 4, shuffle: true, num_workers: 0}
  inferer: {_target_: SimpleInferer}
  handlers:
  - {_target_: ValidationHandler, validator: '@validate::evaluator', epoch_level: true, interval: '@val_interval'}
  - {_target_: StatsHandler, tag_name: train_loss, output_transform: "$monai.handlers.from_engine(['loss'], first=True)"}
  trainer:
    _target_: SupervisedTrainer
    max_epochs: 1
    device: '@device'
    train_data_loader: '@train::dataloader'
    network: '@network'
    loss_function: '@loss'
    optimizer: '@optimizer'
    inferer: '@train::inferer'
    train_handlers: '@train::handlers'
validate:
  preprocessing: {_target_: Compose, transforms: '@transforms'}
  postprocessing:
    _target_: Compose
    transforms:
    - {_target_: Activationsd, keys: pred, softmax: true}
    - {_target_: AsDiscreted, keys: [pred, label], argmax: [true, false], to_onehot: '@num_classes'}
  dataset:
    _target_: CacheDataset
    progress: false
    data: {_target_: mimtl.data.datalist.load_datalist, path: '@datalist', data_list_key: validation}
    transform: '@validate::preprocessing'
  dataloader: {_target_: DataLoader, dataset: '@validate::dataset', batch_size: 4, shuffle: false, num_workers: 0}
  inferer: {_target_: SimpleInferer}
  key_metric:
    val_accuracy: {_target_: ignite.metrics.Accuracy, output_transform: "$monai.handlers.from_engine(['pred', 'label'])"}
  handlers:
  - {_target_: StatsHandler, iteration_log: false}
  - _target_: mimtl.handlers.AtomicCheckpointSaver
    save_dir: '@ckpt_dir'
    save_dict: {model: '@network'}
    save_key_metric: true
    key_metric_filename: model.pt
  evaluator:
    _target_: SupervisedEvaluator
    device: '@device'
    val_data_loader: '@validate::dataloader'
    network: '@network'
    inferer: '@validate::inferer'
    postprocessing: '@validate::postprocessing'
    key_val_metric: '@validate::key_metric'
    val_handlers: '@validate::handlers'
initialize: [$monai.utils.set_determinism(seed=@seed)]
run: [$@train::trainer.run()]
"""

EVALUATE = """
validate::handlers:
- {_target_: CheckpointLoader, load_path: "$@ckpt_dir + '/model.pt'", load_dict: {model: '@network'}, map_location: cpu}
- {_target_: StatsHandler, iteration_log: false}
- {_target_: MetricsSaver, save_dir: '@output_dir', metrics: '*'}
run: [$@validate::evaluator.run()]
"""

MULTI_GPU = """
device: {_target_: mimtl.engines.local_device}
network:
  _target_: torch.nn.parallel.DistributedDataParallel
  module: $@network_def.to(@device)
train::sampler: {_target_: DistributedSampler, dataset: '@train::dataset', even_divisible: true, shuffle: true}
train::dataloader::sampler: '@train::sampler'
train::dataloader::shuffle: false
train::trainer::train_handlers: {_target_: mimtl.engines.main_process_only, handlers: '@train::handlers'}
validate::evaluator::val_handlers: {_target_: mimtl.engines.main_process_only, handlers: '@validate::handlers'}
initialize: [{_target_: mimtl.engines.init_distributed}, "$monai.utils.set_determinism(seed=@seed)"]
run: [$@train::trainer.run()]
finalize: [{_target_: mimtl.engines.cleanup_distributed}]
"""

INFERENCE = """
bundle_root: .
output_dir: $@bundle_root + '/eval'
dataset_dir: $@bundle_root + '/data/images'
device: $torch.device('cpu')
num_classes: 2
__NETWORK__
network: $@network_def.to(@device)
preprocessing:
  _target_: Compose
  transforms:
  - {_target_: LoadImaged, keys: image, ensure_channel_first: true}
  - {_target_: ScaleIntensityd, keys: image}
  - {_target_: EnsureTyped, keys: image}
dataset:
  _target_: Dataset
  data: {_target_: mimtl.data.datalist.list_images, source: '@dataset_dir'}
  transform: '@preprocessing'
dataloader: {_target_: DataLoader, dataset: '@dataset', batch_size: 4, shuffle: false, num_workers: 0}
inferer: {_target_: SimpleInferer}
postprocessing:
  _target_: Compose
  transforms:
  - {_target_: Activationsd, keys: pred, softmax: true}
handlers:
- {_target_: CheckpointLoader, load_path: "$@bundle_root + '/models/model.pt'", load_dict: {model: '@network'}, map_location: cpu}
- {_target_: ClassificationSaver, output_dir: '@output_dir', batch_transform: "$lambda x: [xx['image'].meta for xx in x]", output_transform: "$monai.handlers.from_engine(['pred'])"}
evaluator:
  _target_: SupervisedEvaluator
  device: '@device'
  val_data_loader: '@dataloader'
  network: '@network'
  inferer: '@inferer'
  postprocessing: '@postprocessing'
  val_handlers: '@handlers'
initialize: [$monai.utils.set_determinism(seed=0)]
run: [$@evaluator.run()]
"""

LOGGING = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def metadata() -> dict:
    import monai

    return {
        "schema": "mimtl/bundle/metadata_schema.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": "tiny test bundle"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"mimtl": "0.1.0"},
        "name": "Tiny test classifier",
        "task": "Binary classification of bright squares",
        "description": "A test fixture bundle for the bundle tooling.",
        "authors": "mimtl developers",
        "copyright": "Copyright (c) mimtl developers",
        "intended_use": "Tests only",
        "data_source": "Generated by tests/bundle_factory.py",
        "references": ["none"],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "synthetic",
                    "num_channels": 1,
                    "spatial_shape": [SIZE, SIZE],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "classes",
                    "num_channels": 2,
                    "spatial_shape": [1],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "dark", "1": "bright"},
                }
            },
        },
    }


def write_images(folder: Path, n: int, seed: int = 0) -> list[dict]:
    """PNGs of noise; class 1 has a bright square. Returns datalist items (paths relative to folder.parent)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        label = i % 2
        img = rng.integers(0, 60, (SIZE, SIZE), dtype=np.uint8)
        if label:
            y, x = rng.integers(2, SIZE - 14, 2)
            img[y : y + 12, x : x + 12] = 230
        Image.fromarray(img).save(folder / f"case{i:03d}.png")
        items.append({"image": f"{folder.name}/case{i:03d}.png", "label": label})
    return items


def make_bundle(root: Path, name: str = "tiny_cls", n: int = 12, weights: bool = True) -> Path:
    """Write the bundle ``root/name`` with its data under ``data/``; returns the bundle folder."""
    b = root / name
    for d in ("configs", "models", "docs", "data"):
        (b / d).mkdir(parents=True, exist_ok=True)
    items = write_images(b / "data" / "images", n)
    half = n // 2
    (b / "data" / "datalist.json").write_text(json.dumps({"training": items[:half], "validation": items[half:]}))
    configs = [("train", TRAIN), ("evaluate", EVALUATE), ("multi_gpu_train", MULTI_GPU), ("inference", INFERENCE)]
    for fname, text in configs:
        text = text.replace("__NETWORK__\n", NETWORK)
        yaml.safe_load(text)  # fail here, not deep inside MONAI, if a fixture config is malformed
        (b / "configs" / f"{fname}.yaml").write_text(text.lstrip())
    (b / "configs" / "logging.conf").write_text(LOGGING)
    (b / "configs" / "metadata.json").write_text(json.dumps(metadata(), indent=2))
    (b / "LICENSE").write_text("Apache-2.0 (test fixture)\n")
    (b / "docs" / "README.md").write_text("# Tiny test classifier\n\nA fixture for tests.\n")
    if weights:
        from monai.networks.nets import DenseNet

        torch.manual_seed(0)
        net = DenseNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=2,
            init_features=8,
            growth_rate=4,
            block_config=[2, 2],
            bn_size=2,
        )
        torch.save(net.state_dict(), b / "models" / "model.pt")
    # the generated MONAI loader config, as `mimtl export NAME --format monai-config` writes it
    from mimtl.bundle import Bundle
    from mimtl.bundle.monai_config import write_monai_configs

    write_monai_configs(Bundle(b))
    return b

"""The audit of shared configs flags code-running constructs and passes ordinary bundle configs."""

import pytest

from mimtl.bundle import audit_config, audit_config_files


@pytest.mark.parametrize(
    "config",
    [
        {"x": "$import os"},
        {"x": "$os.system('id')"},
        {"x": "$__import__('os').system('id')"},
        {"x": "$torch.__class__"},
        {"x": {"_target_": "eval", "source": "1"}},
        {"x": {"_target_": "subprocess.run", "args": ["id"]}},
        {"x": {"_target_": "torch.hub.load", "repo_or_dir": "a/b", "model": "m"}},
        {"x": "$torch.load(@path)"},
        {"x": "$np.load(@path, allow_pickle=True)"},
        {"x": {"_target_": "DenseNet121", "_mode_": "debug"}},
        {"x": "$exec('1')"},
    ],
)
def test_flags_code_running_constructs(config):
    findings = audit_config(config, source="shared.yaml")
    assert findings, config
    assert all(f.source == "shared.yaml" and f.config_id.startswith("x") for f in findings)


@pytest.mark.parametrize(
    "config",
    [
        {"network_def": {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": 1, "out_channels": 2}},
        {"net": {"_target_": "monai.networks.nets.UNet"}, "p": {"_target_": "mimtl.io.datalist.load_datalist"}},
        {"device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')"},
        {"ckpt": "$@bundle_root + '/models/model.pt'", "n": "$len(@data) // 2"},
        {"w": "$torch.load(@path, weights_only=True)"},
        {"l": "$[i * 2 for i in range(3)]", "f": "$lambda x: x['image']"},
        {"i": ["$import torch.distributed as dist", "$dist.get_rank() == 0"]},
    ],
)
def test_passes_ordinary_configs(config):
    assert audit_config(config) == []


def test_audit_config_files_covers_overrides(tmp_path):
    f = tmp_path / "lab_b.yaml"
    f.write_text("train::trainer::max_epochs: 3\nlr: 0.01\n")
    assert audit_config_files([f]) == []
    findings = audit_config_files([f], overrides={"device": "$__import__('os').getcwd()"})
    assert [x.source for x in findings] == ["override"]

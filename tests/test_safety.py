"""The allowlist audit of shared configs: a corpus of escapes, each flagged; the shipped bundles
and the test bundle pass; ``mimtl run`` refuses flagged input without running any of it."""

import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mimtl.bundle import audit_config, audit_config_files
from mimtl.bundle.safety import AuditError, audit_bundle, audit_weights, enforce
from mimtl.cli import main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

# Known ways out of Python sandboxes and of MONAI bundle configs (MONAI's advisories on
# bundle configs: _target_ / $ / optional_import / nested ConfigParser / pickles), one per entry.
ESCAPES = {
    # module re-exports: an allowed package holding a module that is not allowed
    "torch.os re-export in $": {"initialize": ["$torch.os.system('id')"]},
    "mimtl.cli.subprocess target": {"x": {"_target_": "mimtl.cli.subprocess.call", "args": ["id"]}},
    "torch.os target": {"x": {"_target_": "torch.os.system", "command": "id"}},
    "numpy.os target": {"x": {"_target_": "numpy.os.system", "command": "id"}},
    "monai.bundle.os target": {"x": {"_target_": "monai.bundle.os.system", "command": "id"}},
    "np.ctypeslib": {"x": "$np.ctypeslib.load_library('libc', '/lib')"},
    "torch.ops.load_library": {"x": "$torch.ops.load_library('/tmp/evil.so')"},
    "torch.utils.cpp_extension": {"x": {"_target_": "torch.utils.cpp_extension.load_inline", "name": "x"}},
    "torch.hub.load": {"x": {"_target_": "torch.hub.load", "repo_or_dir": "a/b", "model": "m"}},
    "module object as a value": {"m": "$torch", "x": "$[t.os for t in [torch]]"},
    # pickle loaders
    "torch.load without weights_only": {"x": "$torch.load(@path)"},
    "torch.load weights_only=False": {"x": "$torch.load(@path, weights_only=False)"},
    "torch.load weights_only via **": {"x": "$torch.load(@path, **{'weights_only': False})"},
    "torch.load as a target": {"x": {"_target_": "torch.load", "f": "@path"}},
    "torch.serialization.load": {"x": "$torch.serialization.load(@path, weights_only=False)"},
    "torch.serialization.add_safe_globals": {"x": "$torch.serialization.add_safe_globals([@anything])"},
    "torch.jit.load": {"x": "$torch.jit.load(@path)"},
    "numpy.load allow_pickle": {"x": "$numpy.load(@path, allow_pickle=True)"},
    "pickle.loads target": {"x": {"_target_": "pickle.loads", "data": "x"}},
    "pickle loads on a runtime value": {"x": "$@pickle_module.loads(@data)"},
    "PersistentDataset weights_only false": {
        "x": {"_target_": "PersistentDataset", "data": [], "cache_dir": ".", "weights_only": False}
    },
    "pickle_module keyword": {"x": {"_target_": "PersistentDataset", "data": [], "pickle_module": "dill"}},
    # imports by name, nested parsers and runners
    "optional_import in $": {"x": "$monai.utils.optional_import('os')[0].system('id')"},
    "optional_import target": {"x": {"_target_": "monai.utils.optional_import", "module": "os"}},
    "monai locate/instantiate": {"x": "$monai.utils.instantiate('os.system', 'default', command='id')"},
    "nested ConfigParser": {"x": {"_target_": "monai.bundle.ConfigParser", "config": {"y": "$__import__('os')"}}},
    "nested ConfigParser in $": {"x": "$monai.bundle.ConfigParser({'y': 1}).get_parsed_content('y')"},
    "monai.bundle.run": {"x": {"_target_": "monai.bundle.run", "config_file": "/tmp/other.yaml"}},
    "monai run_cmd": {"x": "$monai.utils.misc.run_cmd(['id'])"},
    "$import os": {"x": "$import os"},
    "$from os import system": {"x": "$from os import system"},
    "$import torch (any import)": {"x": "$import torch.distributed as dist"},
    "$import after an expression": {"x": "$1\nimport os"},
    # builtins that compute names or run code
    "__import__": {"x": "$__import__('os').system('id')"},
    "getattr with built strings": {"x": "$getattr(torch, 'o' + 's').system('id')"},
    "eval": {"x": "$eval('1')"},
    "exec": {"x": "$exec('import os')"},
    "compile": {"x": "$compile('1', 'f', 'eval')"},
    "open a file for writing": {"x": "$open('/tmp/x', 'w').write('x')"},
    "globals": {"x": "$globals()['__builtins__']"},
    "vars": {"x": "$vars(torch)['os']"},
    "breakpoint": {"x": "$breakpoint()"},
    "__builtins__": {"x": "$__builtins__['eval']('1')"},
    "eval as a bare target": {"x": {"_target_": "eval", "source": "1"}},
    "type() with three args": {"x": "$type('X', (), {})"},
    # class-hierarchy walks and interpreter internals
    "class hierarchy walk": {"x": "$().__class__.__bases__[0].__subclasses__()"},
    "__globals__ of a function": {"x": "$monai.utils.set_determinism.__globals__['os']"},
    "dunder on a reference": {"x": "$@network.__class__.__init__.__globals__"},
    "mro without dunders": {"x": "$@cls.mro()[-1]"},
    "generator frame": {"x": "$(i for i in [1]).gi_frame.f_globals"},
    "unicode-escaped dunder": {"x": "$().\uff3f\uff3fclass\uff3f\uff3f"},
    "private attribute": {"x": "$torch._C._get_tracing_state"},
    # format strings reading attributes
    "str.format attribute access": {"x": "$'{0.__class__}'.format(@x)"},
    "str.format_map": {"x": "$'{x.__init__.__globals__}'.format_map({'x': @x})"},
    "f-string with a dunder": {"x": "$f'{@x.__class__}'"},
    # lambda / comprehension / walrus tricks
    "lambda rebinding torch": {"x": "$(lambda torch: torch.os)(@y)"},
    "comprehension shadowing a builtin": {"x": "$[len for len in [@y]]"},
    "walrus": {"x": "$(e := @y) and e"},
    "lambda default reaching os": {"x": "$(lambda f=torch.os: f)()"},
    # computed or indirect _target_
    "string concatenation into _target_": {"x": {"_target_": "$'torch.o' + 's.system'", "command": "id"}},
    "_target_ from a reference": {"t": "torch.os.system", "x": {"_target_": "@t", "command": "id"}},
    "override key naming _target_": {"network_def::_target_": "torch.os.system"},
    # the other special keys
    "_requires_ with a dangerous call": {"x": {"_target_": "DenseNet121", "_requires_": "$torch.os.system('id')"}},
    "_disabled_ expression": {"x": {"_target_": "DenseNet121", "_disabled_": "$__import__('os').system('id') != 0"}},
    "_mode_ debug": {"x": {"_target_": "DenseNet121", "_mode_": "debug"}},
    "_mode_ computed": {"x": {"_target_": "DenseNet121", "_mode_": "$'de' + 'bug'"}},
    "macro from another file": {"x": "%/tmp/other_lab/payload.yaml#payload"},
    # file writers a config could aim at site-packages/*.pth
    "numpy.savetxt": {"x": "$numpy.savetxt('/tmp/evil.pth', ['import os'], fmt='%s')"},
    "tofile on a runtime value": {"x": "$@array.tofile('/tmp/evil.pth')"},
    "torch.save target": {"x": {"_target_": "torch.save", "obj": 1, "f": "/tmp/x.pt"}},
    "Path.write_text on a runtime value": {"x": "$@path.write_text('import os')"},
    # not an expression at all
    "statement instead of an expression": {"x": "$x = 1"},
    "unknown name": {"x": "$os.system('id')"},
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_every_escape_is_flagged(name):
    findings = audit_config(ESCAPES[name], source="lab_b.yaml")
    assert findings, name
    assert all(f.source == "lab_b.yaml" and f.reason for f in findings)
    assert all(str(f).startswith("lab_b.yaml: ") for f in findings)


def test_corpus_size():
    assert len(ESCAPES) >= 20


@pytest.mark.parametrize(
    "config",
    [
        {"network_def": {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": 1, "out_channels": 2}},
        {
            "net": {"_target_": "monai.networks.nets.UNet"},
            "opt": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR"},
        },
        {
            "m": {"_target_": "ignite.metrics.Accuracy"},
            "f": {"_target_": "scipy.ndimage.gaussian_filter", "_mode_": "callable"},
        },
        {"device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')"},
        {"ckpt": "$@bundle_root + '/models/model.pt'", "n": "$len(@data) // 2"},
        {
            "w": "$torch.load(@path, weights_only=True)",
            "t": {"_target_": "torch.load", "f": "@p", "weights_only": True},
        },
        {"l": "$[i * 2 for i in range(3)]", "f": "$lambda x: [xx['image'].meta for xx in x]"},
        {"net": "$@network_def.to(@device, memory_format=torch.channels_last if @cl else torch.contiguous_format)"},
        {"p": "$list(@network.parameters()) + list(@loss.parameters())", "r": ["$@train::trainer.run()"]},
        {"h": "$monai.handlers.from_engine(['loss'], first=True)", "d": "$torch.float32", "n": "$np.float32"},
        {"s": "$monai.utils.set_determinism(seed=@seed)", "k": "$monai.utils.CommonKeys.IMAGE"},
        {"fs": '$f"{@name}_{len(@x)}"', "j": "$'/'.join([@a, 'b'])", "macro": "%#network_def"},
    ],
)
def test_ordinary_configs_pass(config):
    assert audit_config(config) == []


def _shipped_config_files():
    return sorted(
        p
        for b in (REPO / "bundles").iterdir()
        if (b / "configs").is_dir()
        for p in (b / "configs").rglob("*")
        if p.suffix in (".yaml", ".yml", ".json")
    )


@pytest.mark.parametrize("path", _shipped_config_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_audit_clean(path):
    assert audit_config_files([path]) == []


def test_shipped_bundles_audit_clean_as_if_from_elsewhere():
    bundles = [b for b in (REPO / "bundles").iterdir() if (b / "configs" / "metadata.json").is_file()]
    assert bundles
    for b in bundles:
        assert audit_bundle(b) == [], b.name


def test_test_bundle_audits_clean(tiny_bundle):
    assert audit_bundle(tiny_bundle) == []


def test_overrides_are_audited(tmp_path):
    f = tmp_path / "lab_b.yaml"
    f.write_text("train::trainer::max_epochs: 3\nlr: 0.01\n")
    assert audit_config_files([f]) == []
    findings = audit_config_files([f], overrides={"device": "$__import__('os').getcwd()"})
    assert [(x.source, x.config_id) for x in findings] == [("override", "device")]


def test_enforce_checks_text_that_only_exists_at_run_time():
    """A nested ConfigParser (as an experiment's runs use) is checked where MONAI evaluates."""
    from monai.bundle import ConfigParser

    with enforce():
        assert ConfigParser({"x": "$len([1, 2])"}).get_parsed_content("x") == 2
        with pytest.raises(Exception) as e:
            ConfigParser({"x": "$torch.os.getcwd()"}).get_parsed_content("x")
        assert any(isinstance(c, AuditError) for c in _chain(e.value))
        with pytest.raises(Exception) as e:
            ConfigParser({"t": "torch.os.getcwd", "x": {"_target_": "@t"}}).get_parsed_content("x")
        assert any(isinstance(c, AuditError) for c in _chain(e.value))
    assert ConfigParser({"x": "$torch.os.getcwd()"}).get_parsed_content("x")  # restored afterwards


def _chain(e):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def _payload(marker: Path) -> str:
    return yaml.safe_dump({"initialize": [f"$torch.os.system('touch {marker}')"]})


def test_run_refuses_flagged_override_without_running_it(tiny_bundle, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(_payload(marker))
    before = (tiny_bundle / "models" / "model.pt").read_bytes()
    assert main(["run", "tiny_cls", "train", "--override", str(evil)]) == 2
    err = capsys.readouterr().err
    assert "initialize::0" in err and "torch.os" in err and "nothing was run" in err
    assert not marker.exists()  # the payload did not run
    assert (tiny_bundle / "models" / "model.pt").read_bytes() == before  # nor did the training
    assert main(["audit", str(evil)]) == 1
    # the same file with --trust runs the payload: the test's payload is a live one
    assert main(["run", "tiny_cls", "train", "--override", str(evil), "--trust"]) == 0
    assert marker.exists()


def test_run_refuses_flagged_set_value(tiny_bundle, tmp_path, capsys):
    marker = tmp_path / "pwned"
    assert main(["run", "tiny_cls", "train", "--set", f"device=$torch.os.system('touch {marker}')"]) == 2
    assert "override: device" in capsys.readouterr().err
    assert not marker.exists()


def test_run_accepts_clean_override(tiny_bundle, tmp_path, capsys):
    safe = tmp_path / "lab_b.yaml"
    safe.write_text("train::trainer::max_epochs: 1\nnum_workers_unused: $len([1, 2])\n")
    assert main(["audit", str(safe)]) == 0
    assert main(["run", "tiny_cls", "train", "--override", str(safe), "--allow-new-keys"]) == 0


def _foreign_copy(tiny_bundle, tmp_path) -> Path:
    dst = tmp_path / "received" / "tiny_cls"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_foreign_bundle_with_flagged_config_is_refused(tiny_bundle, tmp_path, capsys):
    marker = tmp_path / "pwned"
    b = _foreign_copy(tiny_bundle, tmp_path)
    train = b / "configs" / "train.yaml"
    config = yaml.safe_load(train.read_text())
    config["initialize"].append(f"$torch.os.system('touch {marker}')")
    train.write_text(yaml.safe_dump(config))
    assert main(["run", str(b), "train"]) == 2
    err = capsys.readouterr().err
    assert "train.yaml: initialize::1" in err
    assert not marker.exists()
    assert main(["run", str(b), "train", "--trust"]) == 0  # --trust is the way past the audit
    assert marker.exists()


def test_foreign_bundle_logging_conf_is_audited(tiny_bundle, tmp_path, capsys):
    b = _foreign_copy(tiny_bundle, tmp_path)
    conf = b / "configs" / "logging.conf"
    conf.write_text(
        "[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=\n[logger_root]\nlevel=INFO\nhandlers=h\n"
        "[handler_h]\nclass=StreamHandler\nargs=(os.system('id'),)\n"
    )
    assert main(["run", str(b), "train"]) == 2
    assert "handler args are eval'ed" in capsys.readouterr().err


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_foreign_bundle_with_pickled_code_in_models_is_refused(tiny_bundle, tmp_path, capsys):
    b = _foreign_copy(tiny_bundle, tmp_path)
    assert audit_weights(b) == []
    torch.save({"model": _Payload()}, b / "models" / "extra.pt")
    assert [f.construct for f in audit_weights(b)] == ["extra.pt"]
    assert main(["run", str(b), "evaluate"]) == 2
    err = capsys.readouterr().err
    assert "extra.pt" in err and "weights_only" in err

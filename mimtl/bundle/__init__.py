"""Finding, loading, verifying and exporting bundles, offline."""

from mimtl.bundle.bundle import (
    BUNDLE_PATH_ENV,
    Bundle,
    BundleError,
    bundle_search_path,
    find_bundle,
    list_bundles,
    load_bundle,
    load_checkpoint,
    weights_path,
)
from mimtl.bundle.chain import WorkflowChain
from mimtl.bundle.export import export_bundle
from mimtl.bundle.overrides import ConfigKeyError, check_override_keys, parse_overrides
from mimtl.bundle.safety import Finding, audit_config, audit_config_files
from mimtl.bundle.verify import METADATA_SCHEMA, CheckResult, verify_bundle

__all__ = [
    "BUNDLE_PATH_ENV",
    "METADATA_SCHEMA",
    "Bundle",
    "BundleError",
    "CheckResult",
    "ConfigKeyError",
    "Finding",
    "WorkflowChain",
    "audit_config",
    "audit_config_files",
    "bundle_search_path",
    "check_override_keys",
    "export_bundle",
    "find_bundle",
    "list_bundles",
    "load_bundle",
    "load_checkpoint",
    "parse_overrides",
    "verify_bundle",
    "weights_path",
]

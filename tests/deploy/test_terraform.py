"""deploy/terraform checked without a cloud, part one: every file parsed (python-hcl2) and held
to the structure `terraform validate` and a review would ask for, and no secret in any file.
The values handed to the charts are checked in test_terraform_values.py, Terraform's own tools
and checkov in test_terraform_tools.py; both use the helpers here."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest

from .charts_render import HELM, REPO, SERVICES

TERRAFORM = REPO / "deploy" / "terraform"
MODULES = TERRAFORM / "modules"
MODULE_NAMES = (
    "registry",
    "network",
    "cluster",
    "postgres",
    "redis",
    "qdrant",
    "observability",
    "parley",
)
# Every configuration: the environments' root, the state bucket's bootstrap, each module.
CONFIGS = (TERRAFORM, TERRAFORM / "bootstrap", *(MODULES / name for name in MODULE_NAMES))
ENVIRONMENTS = ("staging", "production")
PROVIDERS = {"aws", "helm", "kubernetes", "random"}
# Arguments of a module block that are Terraform's own, not the module's variables.
META_ARGUMENTS = {"source", "version", "count", "for_each", "depends_on", "providers"}

# A name that holds a secret itself (not its ARN, name or schedule).
SECRET_NAME = re.compile(r"(password|passwd|token|secret|secret_string|api[_-]?key)$", re.I)
# What leaked keys look like: OpenAI/Anthropic keys, AWS access keys, GitHub tokens, PEM keys.
SECRET_VALUE = re.compile(
    r"sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|-----BEGIN"
)
# An expression that draws its value from somewhere Terraform tracks, not a literal.
REFERENCE = re.compile(r"\b(var|local|data|module|random_password|aws_[a-z0-9_]+)\.")

OPTIONS = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)
Body = dict[str, Any]


@functools.cache
def parse(path: Path) -> Body:
    return dict(hcl2.loads(path.read_text(), serialization_options=OPTIONS))


def tf_files(config: Path) -> list[Path]:
    return sorted(config.glob("*.tf"))


def blocks(config: Path, kind: str) -> dict[str, Body]:
    """One kind of named block (variable, output, module) of a configuration, by name."""
    found: dict[str, Body] = {}
    for path in tf_files(config):
        for block in parse(path).get(kind, []):
            found.update(block)
    return found


def typed_blocks(config: Path, kind: str) -> dict[tuple[str, str], Body]:
    """Resources or data sources of a configuration, by (type, name)."""
    found: dict[tuple[str, str], Body] = {}
    for path in tf_files(config):
        for block in parse(path).get(kind, []):
            for type_, named in block.items():
                for name, body in named.items():
                    found[(type_, name)] = body
    return found


def terraform_block(config: Path) -> Body:
    settings: list[Body] = [
        block for path in tf_files(config) for block in parse(path).get("terraform", [])
    ]
    assert len(settings) == 1, f"{config}: {len(settings)} terraform blocks"
    return settings[0]


def required_providers(config: Path) -> dict[str, Body]:
    found: dict[str, Body] = {}
    for entry in terraform_block(config).get("required_providers", []):
        found.update(entry)
    return found


def text_without(config: Path, kind: str = "", name: str = "") -> str:
    """The configuration as JSON, less one named block: what may refer to that block."""
    parts = []
    for path in tf_files(config):
        for key, value in parse(path).items():
            if key == kind:
                value = [{k: v for k, v in block.items() if k != name} for block in value]
            parts.append(json.dumps(value))
    return "\n".join(parts)


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key path, value) pair under a parsed body."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}[{index}]")
    else:
        yield path, value


def module_dir(config: Path, source: str) -> Path:
    return (config / source).resolve()


def config_id(config: Path) -> str:
    return str(config.relative_to(TERRAFORM)) if config != TERRAFORM else "root"


configs = pytest.mark.parametrize("config", CONFIGS, ids=config_id)


# Running Terraform itself (console, fmt, validate) needs its binary.
TERRAFORM_BIN = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(TERRAFORM_BIN is None, reason="no terraform binary here")


def quiet_environment(tmp_path: Path, config: str = "") -> dict[str, str]:
    """Terraform's environment with a CLI configuration of our own (none of the user's)."""
    rc = tmp_path / "terraformrc"
    rc.write_text(config)
    return {**os.environ, "TF_CLI_CONFIG_FILE": str(rc), "CHECKPOINT_DISABLE": "1"}


def console(folder: Path, expression: str, *arguments: str) -> Any:
    """The JSON value of an expression, from `terraform console` in a provider-less folder."""
    result = subprocess.run(
        [str(TERRAFORM_BIN), "console", "-no-color", *arguments],
        input=f"nonsensitive(jsonencode({expression}))\n",
        cwd=folder,
        capture_output=True,
        text=True,
        env=quiet_environment(folder),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(json.loads(result.stdout.replace("$${", "${").replace("%%{", "%{")))


# Layout


def test_every_module_of_the_design_is_there() -> None:
    present = {path.name for path in MODULES.iterdir() if path.is_dir()}
    assert present == set(MODULE_NAMES)
    for config in CONFIGS:
        assert tf_files(config), f"{config} has no .tf file"


@configs
def test_every_variable_is_typed_and_described(config: Path) -> None:
    variables = blocks(config, "variable")
    assert variables, f"{config_id(config)} has no variables"
    for name, body in variables.items():
        assert "type" in body, f"{config_id(config)}: variable {name} has no type"
        description = body.get("description", "")
        assert len(description) > 15, f"{config_id(config)}: variable {name} is not described"


@configs
def test_every_output_is_described(config: Path) -> None:
    for name, body in blocks(config, "output").items():
        assert len(body.get("description", "")) > 10, f"{config_id(config)}: output {name}"


@configs
def test_every_declared_variable_is_used(config: Path) -> None:
    unused = [
        name
        for name in blocks(config, "variable")
        if not re.search(rf"\bvar\.{name}\b", text_without(config, "variable", name))
    ]
    assert not unused, f"{config_id(config)} declares unused variables: {unused}"


def test_every_module_output_is_used_or_exported() -> None:
    root = text_without(TERRAFORM)
    for call, body in blocks(TERRAFORM, "module").items():
        for output in blocks(module_dir(TERRAFORM, body["source"]), "output"):
            pattern = rf"\bmodule\.{call}(\[\d+\])?\.{output}\b"
            assert re.search(pattern, root), f"module.{call}.{output} is neither used nor exported"


@configs
def test_module_calls_give_exactly_the_modules_variables(config: Path) -> None:
    for call, body in blocks(config, "module").items():
        variables = blocks(module_dir(config, body["source"]), "variable")
        given = set(body) - META_ARGUMENTS
        assert given <= set(variables), f"module.{call} sets undeclared {given - set(variables)}"
        required = {name for name, spec in variables.items() if "default" not in spec}
        assert required <= given, f"module.{call} misses required {required - given}"


@configs
def test_module_sources_are_folders_of_this_repository(config: Path) -> None:
    for call, body in blocks(config, "module").items():
        source = body["source"]
        # Nothing can be downloaded here, and a local module needs no version pin.
        assert source.startswith("./") or source.startswith("../"), f"module.{call}: {source}"
        assert tf_files(module_dir(config, source)), f"module.{call}: {source} has no .tf file"


# Versions, providers, backend


@configs
def test_terraform_and_every_provider_are_pinned(config: Path) -> None:
    settings = terraform_block(config)
    assert re.match(r">= ?1\.1[0-9]", settings.get("required_version", "")), config_id(config)
    root = required_providers(TERRAFORM)
    providers = required_providers(config)
    for name, spec in providers.items():
        assert spec["source"] == f"hashicorp/{name}", (config_id(config), name)
        version = spec.get("version", "")
        assert re.fullmatch(r"(~> ?|= ?)?\d+\.\d+(\.\d+)?", version), (config_id(config), name)
        if config.parent == MODULES:
            # A module pinning otherwise than the root would fail init or float.
            assert version == root[name]["version"], (config_id(config), name)
    assert set(root) == PROVIDERS


@configs
def test_every_resource_provider_is_required(config: Path) -> None:
    """A resource of an undeclared provider would install its newest version, unpinned."""
    declared = set(required_providers(config))
    for kind in ("resource", "data"):
        for type_, name in typed_blocks(config, kind):
            assert type_.split("_")[0] in declared, f"{config_id(config)}: {type_}.{name}"


def test_state_lives_in_s3_with_the_bucket_given_at_init() -> None:
    (backend,) = terraform_block(TERRAFORM)["backend"]
    # Partial configuration: nothing about the bucket or credentials in the code.
    assert backend == {"s3": {}}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_each_environment_has_its_own_locked_encrypted_state(environment: str) -> None:
    settings = parse(TERRAFORM / "environments" / f"{environment}.s3.tfbackend")
    assert set(settings) <= {"key", "region", "encrypt", "use_lockfile", "kms_key_id"}
    assert settings["encrypt"] is True
    assert settings["use_lockfile"] is True
    assert environment in settings["key"].split("/")
    others = [
        parse(TERRAFORM / "environments" / f"{other}.s3.tfbackend")["key"]
        for other in ENVIRONMENTS
        if other != environment
    ]
    assert settings["key"] not in others


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environment_files_set_declared_variables_only(environment: str) -> None:
    values = parse(TERRAFORM / "environments" / f"{environment}.tfvars")
    variables = blocks(TERRAFORM, "variable")
    assert set(values) <= set(variables), set(values) - set(variables)
    required = {name for name, spec in variables.items() if "default" not in spec}
    assert required <= set(values), f"{environment} leaves {required - set(values)} unset"
    assert values["environment"] == environment
    assert set(values.get("autoscaling", {})) <= set(SERVICES)


# Secrets


@configs
def test_no_secret_is_written_in_the_code(config: Path) -> None:
    variables = blocks(config, "variable")
    for path in tf_files(config):
        for key_path, value in walk(parse(path)):
            if not isinstance(value, str):
                continue
            assert not SECRET_VALUE.search(value), f"{path.name}{key_path}"
            key = key_path.rsplit(".", 1)[-1]
            if not SECRET_NAME.search(key) or key_path.startswith(".variable"):
                continue
            # A secret comes from a resource, a data source or a sensitive variable.
            assert value.startswith("${"), f"{path.name}{key_path} is a literal"
            assert REFERENCE.search(value), f"{path.name}{key_path} refers to nothing"
            for name in re.findall(r"\bvar\.(\w+)", value):
                assert variables[name].get("sensitive") is True, f"var.{name} feeds {key}"


@configs
def test_variables_named_for_a_secret_are_sensitive(config: Path) -> None:
    for name, body in blocks(config, "variable").items():
        if SECRET_NAME.search(name):
            assert body.get("sensitive") is True, f"{config_id(config)}: variable {name}"


def test_kubernetes_and_secrets_manager_values_come_from_references() -> None:
    """What lands in a Kubernetes Secret or a Secrets Manager entry is never a literal (a
    user name aside: it is no secret)."""
    checked = 0
    for config in CONFIGS:
        for (type_, name), body in typed_blocks(config, "resource").items():
            if type_ == "kubernetes_secret_v1":
                data = body["data"]
                fields = {"data": data} if isinstance(data, str) else dict(data)
            elif type_ == "aws_secretsmanager_secret_version":
                fields = {"secret_string": body["secret_string"]}
            else:
                continue
            for key, value in fields.items():
                if "user" not in key.lower():
                    assert REFERENCE.search(str(value)), f"{type_}.{name}: {key}"
                    checked += 1
    assert checked >= 6


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environment_files_hold_no_secret(environment: str) -> None:
    text = (TERRAFORM / "environments" / f"{environment}.tfvars").read_text()
    assert not SECRET_VALUE.search(text)
    for key_path, _ in walk(parse(TERRAFORM / "environments" / f"{environment}.tfvars")):
        name = key_path.split(".")[1].split("[")[0]
        assert not SECRET_NAME.search(name), f"{environment}.tfvars sets {name}"


# Helm releases


def helm_releases() -> Iterator[tuple[Path, str, Body]]:
    for config in CONFIGS:
        for (type_, name), body in typed_blocks(config, "resource").items():
            if type_ == "helm_release":
                yield config, name, body


def local_list(config: Path, name: str) -> list[str]:
    """A local defined as toset([...]) or [...] of string literals."""
    for block in blocks_of(config, "locals"):
        if name in block:
            return re.findall(r'"([^"]+)"', str(block[name]))
    raise AssertionError(f"local.{name} not found in {config}")


def blocks_of(config: Path, kind: str) -> list[Body]:
    return [block for path in tf_files(config) for block in parse(path).get(kind, [])]


def test_parley_releases_install_the_five_local_charts() -> None:
    releases = [(config, body) for config, _, body in helm_releases() if "repository" not in body]
    assert len(releases) == 1, "one helm_release, over the five services"
    config, body = releases[0]
    assert body["for_each"] == "${local.services}"
    services = local_list(config, "services")
    assert sorted(services) == sorted(SERVICES)
    assert body["chart"].startswith("${path.module}/")
    for service in services:
        chart = body["chart"].replace("${path.module}", str(config)).replace("${each.key}", service)
        assert (Path(chart).resolve() / "Chart.yaml").is_file(), chart
        assert Path(chart).resolve() == HELM / service


def test_vendor_charts_come_from_https_repositories_at_pinned_versions() -> None:
    vendor = [(name, body) for _, name, body in helm_releases() if "repository" in body]
    assert {name for name, _ in vendor} >= {"qdrant", "kube_prometheus_stack", "tempo"}
    for name, body in vendor:
        assert body["repository"].startswith("https://"), name
        assert "version" in body, f"helm_release.{name} floats to the newest chart"

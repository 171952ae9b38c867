"""Where fleetctl finds a stage: its region and the stack outputs it needs, read once by `fleetctl configure`.

`fleetctl configure --stage dev` reads the outputs of the Fleetwarden-dev-* stacks with CloudFormation
DescribeStacks and stores them under the user's config directory, so no pool id, client id or API URL is ever
typed by hand. The stored stage becomes the default for later commands (or FLEETWARDEN_STAGE, or --stage).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, RemoteError
from .files import write_private_text

STAGE_ENV = "FLEETWARDEN_STAGE"
CONFIG_DIR_ENV = "FLEETCTL_CONFIG_DIR"
STACK_PREFIX = "Fleetwarden"
# The stacks whose outputs fleetctl reads (stacks/fleet_app.py names them Fleetwarden-<stage>-<part>).
# Identity holds the operator pool, so it must exist; the others may not be deployed in every stage.
REQUIRED_STACKS = ("Identity",)
OPTIONAL_STACKS = ("Audit", "Ingest", "Commands", "Defense")
# Terminal states whose outputs are current; a stack mid-update or rolled back is refused with its status.
# https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_Stack.html (StackStatus)
_USABLE_STATUSES = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE",
                    "IMPORT_ROLLBACK_COMPLETE"}
_STAGE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
_SETTINGS_FILE = "settings.json"
_DEFAULT_STAGE_FILE = "stage"


def config_dir() -> Path:
    """$FLEETCTL_CONFIG_DIR, else $XDG_CONFIG_HOME/fleetwarden, else ~/.config/fleetwarden; created 0700."""
    base = os.environ.get(CONFIG_DIR_ENV)
    if not base:
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        base = str(Path(xdg) / "fleetwarden")
    return _private_dir(Path(base))


def stage_dir(stage: str) -> Path:
    """config_dir()/<stage>, created 0700 (the session cache lives here)."""
    return _private_dir(config_dir() / validate_stage(stage))


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)  # the directory holds session tokens: nobody else lists or reads it
    return path


def validate_stage(stage: str) -> str:
    if not isinstance(stage, str) or not _STAGE.match(stage):
        raise InputError(f"invalid stage {stage!r}: a letter, then letters, digits or '-' (at most 32)")
    return stage


@dataclass(frozen=True)
class Settings:
    stage: str
    region: str
    outputs: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str:
        value = self.outputs.get(key)
        if not value:
            raise InputError(f"stage {self.stage} has no stack output {key} (is that stack deployed?): "
                             f"run fleetctl configure --stage {self.stage} again after deploying it")
        return value

    def stack_name(self, part: str) -> str:
        return f"{STACK_PREFIX}-{self.stage}-{part}"


def load(stage: str | None = None) -> Settings:
    """The stored settings of `stage`, else of $FLEETWARDEN_STAGE, else of the stage configured last."""
    stage = stage or os.environ.get(STAGE_ENV) or _default_stage()
    if not stage:
        raise InputError("fleetctl is not configured: run fleetctl configure --stage STAGE")
    path = config_dir() / validate_stage(stage) / _SETTINGS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"stage {stage} is not configured: run fleetctl configure --stage {stage}") from None
    except ValueError:
        raise InputError(f"{path} is not valid JSON: run fleetctl configure --stage {stage}") from None
    if (not isinstance(data, dict) or not isinstance(data.get("region"), str)
            or not isinstance(data.get("outputs"), dict)):
        raise InputError(f"{path} is not a fleetctl settings file: run fleetctl configure --stage {stage}")
    outputs = {str(k): str(v) for k, v in data["outputs"].items()}
    return Settings(stage=stage, region=data["region"], outputs=outputs)


def _default_stage() -> str | None:
    try:
        return (config_dir() / _DEFAULT_STAGE_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def save(settings: Settings) -> Path:
    path = stage_dir(settings.stage) / _SETTINGS_FILE
    write_private_text(path, json.dumps({"region": settings.region, "outputs": settings.outputs}, indent=2,
                                        sort_keys=True) + "\n")
    write_private_text(config_dir() / _DEFAULT_STAGE_FILE, settings.stage + "\n")
    return path


def configure(cloudformation, stage: str, region: str) -> tuple[Settings, list[str]]:
    """Read the stage's stack outputs with DescribeStacks, store them; returns the settings and the stacks
    not found (optional ones only: a missing Identity stack is an error)."""
    validate_stage(stage)
    outputs: dict[str, str] = {}
    missing: list[str] = []
    for part in REQUIRED_STACKS + OPTIONAL_STACKS:
        name = f"{STACK_PREFIX}-{stage}-{part}"
        stack = _describe(cloudformation, name)
        if stack is None:
            if part in REQUIRED_STACKS:
                raise InputError(f"stack {name} not found in {region}: deploy the stage first "
                                 "(make deploy STAGE=...), or check --region and your AWS credentials")
            missing.append(name)
            continue
        status = stack.get("StackStatus", "")
        if status not in _USABLE_STATUSES:
            raise RemoteError(f"stack {name} is {status}: wait until it is *_COMPLETE and run configure again")
        for output in stack.get("Outputs", []):
            outputs[output["OutputKey"]] = output["OutputValue"]
    settings = Settings(stage=stage, region=region, outputs=outputs)
    save(settings)
    return settings, missing


def _describe(cloudformation, name: str) -> dict | None:
    """The stack, or None if it does not exist; other failures propagate (the CLI explains them)."""
    from botocore.exceptions import ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        # A missing stack is a ValidationError "Stack with id X does not exist":
        # https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeStacks.html (Errors)
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in error.get("Message", ""):
            return None
        raise
    return stacks[0] if stacks else None

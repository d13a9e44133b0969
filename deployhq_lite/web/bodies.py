"""The HTTP API's request bodies: what each route accepts, validated by pydantic."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ..records import DeploymentMode


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


_TRUE = frozenset({"true", "1", "t", "yes", "on"})
_FALSE = frozenset({"false", "0", "f", "no", "off"})


def _rails_boolean(value: Any) -> Any:
    """Rails' (ActiveModel's) boolean strings as well as JSON's true and false, 1 and 0;
    anything else is refused, not taken as true."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("must be true or false (or 1/0, t/f, yes/no, on/off)")


RailsBool = Annotated[bool, BeforeValidator(_rails_boolean)]


class _DeployHQBody(BaseModel):
    """A body of a DeployHQ route, read as DeployHQ's Rails app reads one: flat or
    wrapped in ``{"deployment": {...}}``, with parameters it does not know ignored (and
    named in the response's ``warnings``)."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("deployment"), dict):
            return {**{k: v for k, v in data.items() if k != "deployment"}, **data["deployment"]}
        return data

    @property
    def warnings(self) -> list[str]:
        return [f"unknown parameter {key!r} ignored" for key in sorted(self.model_extra or {})]

    def answer(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with the ``warnings``, if any."""
        return {**data, "warnings": self.warnings} if self.model_extra else data


class RollbackRequest(_DeployHQBody):
    mode: DeploymentMode = DeploymentMode.QUEUE
    copy_config_files: RailsBool = True
    run_build_commands: RailsBool = True


class DeploymentRequest(_DeployHQBody):
    """A new deployment. ``parent_identifier`` (DeployHQ's name) or ``server``: a server
    or server group, by its key or its identifier. ``end_revision`` (or ``branch``)
    defaults to the branch head. ``start_revision`` is accepted for DeployHQ's clients
    and not used: the start is always what each server holds, so nothing is skipped."""

    parent_identifier: str | None = Field(default=None, min_length=1, max_length=200)
    server: str | None = Field(default=None, min_length=1, max_length=200)
    start_revision: str | None = Field(default=None, max_length=200)
    end_revision: str | None = Field(default=None, min_length=1, max_length=200)
    branch: str | None = Field(default=None, max_length=200)
    mode: DeploymentMode = DeploymentMode.QUEUE
    copy_config_files: RailsBool = True
    run_build_commands: RailsBool = True
    config_files_only: RailsBool = False
    repair: RailsBool = False  # write back what the server holds differently
    delete_extra: RailsBool = False  # with repair: delete what the snapshot lacks
    full: RailsBool = False  # write every file, whatever the server holds


class NewRelease(_Body):
    name: str = Field(min_length=1, max_length=200)


class NewItem(_Body):
    uid: str = Field(min_length=1, max_length=200)
    version: int | None = Field(default=None, ge=1)
    locales: list[str] = Field(default_factory=list, max_length=100)
    action: Literal["publish", "unpublish"] = "publish"
    with_references: bool = False


class ReleaseDeploy(_Body):
    environment: str = Field(min_length=1, max_length=200)
    locales: list[str] = Field(default_factory=list, max_length=100)
    schedule_at: str | None = Field(default=None, max_length=100)


class VerifyRequest(_Body):
    fast: bool = False

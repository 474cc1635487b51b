"""The `code.execute` payload and its result: what POST /sandbox/run and the code worker share.

A request may lower the sandbox's limits, never raise them: every limit it names must
be within the configured maximum (sandbox.* in configs/routes.yaml), else the API
answers 400 naming the key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SANDBOX_EXECUTE = "code.execute"


class SandboxLimits(BaseModel):
    """Optional per-run limits; None means the configured value."""

    model_config = ConfigDict(extra="forbid")

    cpu_seconds: int | None = Field(default=None, ge=1)
    memory_mb: int | None = Field(default=None, ge=16)
    wall_seconds: float | None = Field(default=None, gt=0)
    output_bytes: int | None = Field(default=None, ge=256)
    max_processes: int | None = Field(default=None, ge=1)

    def above(self, maxima: BaseModel) -> list[str]:
        """The limits asked above the configured maxima, as 'name: asked > max'."""
        over = []
        for name, asked in self.model_dump(exclude_none=True).items():
            allowed = getattr(maxima, name)
            if asked > allowed:
                over.append(f"{name}: {asked} > {allowed}")
        return over

    def applied_to(self, config: BaseModel) -> BaseModel:
        """The config with these limits (each at most the configured one) in place."""
        lowered = {k: min(v, getattr(config, k)) for k, v in self.model_dump(exclude_none=True).items()}
        return config.model_copy(update=lowered)


class SandboxRun(BaseModel):
    """The payload of `code.execute`."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=1_000_000)
    limits: SandboxLimits = Field(default_factory=SandboxLimits)


class SandboxOutcome(BaseModel):
    """What POST /sandbox/run answers."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    limits_hit: list[str]

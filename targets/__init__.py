"""Hardware target profiles: one declarative profile per target, looked up in a registry."""

from targets.registry import (ArtifactSpec, TargetProfile, UnknownTargetError, all_targets,
                              get_target, register, target_names)
from targets import profiles as _profiles  # noqa: F401  (registers gpu, cpu, arm)

__all__ = ["ArtifactSpec", "TargetProfile", "UnknownTargetError", "all_targets", "get_target",
           "register", "target_names"]

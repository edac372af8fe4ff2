"""Hardware target profiles: one declarative profile per target, looked up in a registry."""

from targets import profiles as _profiles  # noqa: F401  (registers gpu, cpu, arm)
from targets.registry import (
                              TargetProfile,
                              UnknownTargetError,
                              all_targets,
                              get_target,
                              register,
                              target_names,
                              unregister,
)

__all__ = ["TargetProfile", "UnknownTargetError", "all_targets", "get_target",
           "register", "target_names", "unregister"]

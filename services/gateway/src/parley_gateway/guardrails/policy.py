"""Which guardrails run for a tenant, and how hard: ``off``, ``flag`` or ``block`` per guard.

Read once at start from ``GUARDRAILS_FILE`` (YAML); without it every guard is ``flag``::

    default:            # every tenant not named below (each guard left out stays flag)
      injection: flag
    tenants:
      acme:
        injection: block
        pii: block
      lab:
        moderation: off

What each level does, per guard (README "Guardrails"):

============== ================= ===================================== ======================
guard          off               flag                                  block
============== ================= ===================================== ======================
``unicode``    text untouched    NFKC, hidden characters removed,      also refuses a message
                                 recorded                              with hidden characters
``injection``  not scanned       the message passes; what the rules    refuses the message
                                 found is recorded
``pii``        not scanned       answers pass unchanged; personal      redacted in answers as
                                 data and secrets found are recorded   they stream and shown
``moderation`` not called        the classifier's verdict recorded     refuses what it flags
============== ================= ===================================== ======================

``flag`` never delays nor refuses anything (a streamed answer is scanned once it ends), so it
is the level to measure with before enforcing; passages are always marked (conversation).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, cast

import yaml

Level = Literal["off", "flag", "block"]
LEVELS: tuple[Level, ...] = ("off", "flag", "block")


@dataclass(frozen=True, slots=True)
class Policy:
    """How each guard runs for one tenant."""

    unicode: Level = "flag"
    injection: Level = "flag"
    pii: Level = "flag"
    moderation: Level = "flag"


GUARDS = tuple(f.name for f in fields(Policy))


class PolicyError(ValueError):
    """The guardrails file cannot be used; the message says where and why."""


def _policy(base: Policy, raw: Any, where: str) -> Policy:
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: expected a mapping of guard to level")
    changes: dict[str, Level] = {}
    for guard, level in raw.items():
        if guard not in GUARDS:
            raise PolicyError(f"{where}: unknown guard {guard!r} (one of {', '.join(GUARDS)})")
        # YAML reads a bare off as False.
        if level is False:
            level = "off"
        if level not in LEVELS:
            raise PolicyError(f"{where}.{guard}: {level!r} is not one of off, flag, block")
        changes[guard] = cast(Level, level)
    return replace(base, **changes)


@dataclass(frozen=True, slots=True)
class Policies:
    """The policy of every tenant: those named, and the default for the rest."""

    default: Policy = Policy()
    tenants: dict[str, Policy] | None = None

    def of(self, tenant: str) -> Policy:
        if self.tenants:
            return self.tenants.get(tenant, self.default)
        return self.default

    @classmethod
    def parse(cls, text: str, source: str = "GUARDRAILS_FILE") -> Policies:
        """The policies a YAML document describes (see the module docstring)."""
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise PolicyError(f"{source}: not valid YAML ({error})") from None
        if raw is None:
            return cls()
        if not isinstance(raw, dict) or set(raw) - {"default", "tenants"}:
            raise PolicyError(f"{source}: expected a mapping with 'default' and 'tenants'")
        default = _policy(Policy(), raw.get("default"), f"{source}: default")
        tenants = raw.get("tenants") or {}
        if not isinstance(tenants, dict):
            raise PolicyError(f"{source}: tenants: expected a mapping of tenant to policy")
        return cls(
            default,
            {
                str(tenant): _policy(default, policy, f"{source}: tenants.{tenant}")
                for tenant, policy in tenants.items()
            },
        )

    @classmethod
    def load(cls, path: str) -> Policies:
        """The policies of the file at ``path``; the default ones when ``path`` is empty."""
        if not path:
            return cls()
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise PolicyError(f"GUARDRAILS_FILE: cannot read {path} ({error.strerror})") from None
        return cls.parse(text, f"GUARDRAILS_FILE {path}")

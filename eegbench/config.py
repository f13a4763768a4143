"""Config fields that carry their own constraints, and the one validator every method config uses.

A method's ``Config`` dataclass declares each constrained hyperparameter with one of the helpers
below, e.g. ``stage1_steps: int = at_least(0, 1000)`` or ``sampler: str = sampler_field("ddim")``;
:func:`validate_fields` then checks every field against its metadata and raises one
:class:`~eegbench.errors.ConfigError` naming the method, the field, its value and the rule. The
same :data:`GENERATION_SAMPLERS` list applies to every method and to the protocol's ``--sampler``.

Cross-field rules (``n_head`` divides ``dims``) stay in the config's own ``validate()``, after
``validate_fields(self, name)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from eegbench.errors import ConfigError

__all__ = [
    "GENERATION_SAMPLERS",
    "at_least",
    "greater_than",
    "in_range",
    "one_of",
    "sampler_field",
    "template_field",
    "validate_fields",
    "check_sampler",
]

#: Samplers a method may generate with (keys of :data:`eegbench.backbones.denoiser.SAMPLERS`;
#: DDPM is the training scheduler, not a generation choice of any published method).
GENERATION_SAMPLERS: tuple[str, ...] = ("ddim", "dpm-solver++", "plms", "unipc")

_KEY = "eegbench"


def _field(default: Any, rule: dict[str, Any]):
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not supported; use a tuple")
    return dataclasses.field(default=default, metadata={_KEY: rule})


def at_least(low: float, default: Any):
    """A field whose value must be ``≥ low`` (``at_least(1, 32)`` for a batch size)."""
    return _field(default, {"low": low})


def greater_than(low: float, default: Any):
    """A field whose value must be ``> low`` (learning rates)."""
    return _field(default, {"low": low, "low_open": True})


def in_range(low: float, high: float, default: Any, *, low_open: bool = False, high_open: bool = False):
    """A field whose value must lie in the interval from ``low`` to ``high`` (closed unless ``*_open``)."""
    return _field(default, {"low": low, "high": high, "low_open": low_open, "high_open": high_open})


def one_of(choices: Sequence[str], default: str):
    """A field whose value must be one of ``choices``."""
    return _field(default, {"choices": tuple(choices)})


def sampler_field(default: str):
    """The generation-sampler field: one of :data:`GENERATION_SAMPLERS`."""
    return _field(default, {"choices": GENERATION_SAMPLERS})


def template_field(default: str):
    """A text template that must contain one ``{}`` for the class name."""
    return _field(default, {"template": True})


def _interval(rule: dict[str, Any]) -> str:
    lo, hi = rule.get("low"), rule.get("high")
    if hi is None:
        return f"{'>' if rule.get('low_open') else '≥'} {lo:g}"
    left = "(" if rule.get("low_open") else "["
    right = ")" if rule.get("high_open") else "]"
    return f"in {left}{lo:g}, {hi:g}{right}"


def validate_fields(config: Any, who: str) -> None:
    """Check every field of dataclass ``config`` that was declared with a constraint helper.

    Parameters
    ----------
    config : dataclass instance
    who : str
        Method name for the message.

    Raises
    ------
    ConfigError
        ``"<who>: <field>=<value> must be <rule>"`` for the first field that breaks its rule.
    """
    for f in dataclasses.fields(config):
        rule = f.metadata.get(_KEY)
        if not rule:
            continue
        value = getattr(config, f.name)
        if "choices" in rule:
            if value not in rule["choices"]:
                raise ConfigError(f"{who}: {f.name}={value!r} is unknown; known: {', '.join(rule['choices'])}")
            continue
        if rule.get("template"):
            if not isinstance(value, str) or "{}" not in value:
                raise ConfigError(f"{who}: {f.name}={value!r} needs a '{{}}' for the class")
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{who}: {f.name}={value!r} must be a number") from None
        lo, hi = rule.get("low"), rule.get("high")
        bad = number != number  # NaN
        if lo is not None:
            bad |= number <= lo if rule.get("low_open") else number < lo
        if hi is not None:
            bad |= number >= hi if rule.get("high_open") else number > hi
        if bad:
            raise ConfigError(f"{who}: {f.name}={value} must be {_interval(rule)}")


def check_sampler(name: str | None, what: str = "--sampler") -> None:
    """Check a sampler name against :data:`GENERATION_SAMPLERS` (None passes).

    Raises
    ------
    ConfigError
        Naming ``what``, the value and the known samplers.
    """
    if name is not None and name not in GENERATION_SAMPLERS:
        raise ConfigError(f"{what} {name!r} is unknown; known: {', '.join(GENERATION_SAMPLERS)}")

"""Arguments renamed so that one word means one thing across the callbacks; the old names work for one release.

=================================  ==================================  ==========================================
old                                new                                 why
=================================  ==================================  ==========================================
``ExplainCallback(target_layer)``  ``layer``                           ``explain(model, x, layer)``, TCAV,
``ErrorAttribution(target_layer)``                                     FilterGrid and FeatureInversion already
                                                                       say ``layer`` (``layers`` in FeatureMaps)
``ExplainCallback(top_k)``         ``top_k_channels``                  ``top_k`` also meant examples (below)
``ErrorAttribution(top_k)``        ``num_confused``                    the ``errors/most_confused`` grid's rows
``TCAVCallback(alpha)``            ``significance``                    ``alpha`` is the overlay opacity elsewhere
=================================  ==================================  ==========================================

An old name gives a deprecation warning (Lightning's ``rank_zero_deprecation``: shown by default, once per rank
zero); giving the old and the new name together is an error.
"""

from __future__ import annotations

from typing import TypeVar

from lightning_explain._lightning import NAMESPACES

__all__ = ["RENAMED_IN", "renamed"]

T = TypeVar("T")

#: The release that renamed the arguments; the old names go in the next one.
RENAMED_IN = "0.2"


def _deprecation(message: str) -> None:
    rank_zero = NAMESPACES[0].utilities.rank_zero
    rank_zero.rank_zero_deprecation(message, stacklevel=8)  # points at the callback's caller


def renamed(owner: str, old: str, old_value: T | None, new: str, new_value: T, default: T) -> T:
    """The value of the argument ``new`` of ``owner``, given as ``new`` or under its old name ``old``.

    ``old_value`` is None when the old name was not given. ``new_value`` equal to ``default`` counts as not given.

    Raises:
        ValueError: both names were given.

    Example:
        >>> renamed("ExplainCallback", "top_k", None, "top_k_channels", 5, 3)
        5
    """
    if old_value is None:
        return new_value
    if new_value is not default and new_value != default:
        raise ValueError(
            f"{owner} got both {old}={old_value!r} and {new}={new_value!r}; {old} is the old name of {new}: "
            f"pass {new} only."
        )
    _deprecation(
        f"{owner}({old}=...) was renamed to {new}=... in lightning_explain {RENAMED_IN} (same meaning); the old name "
        "will be removed in the next release."
    )
    return old_value

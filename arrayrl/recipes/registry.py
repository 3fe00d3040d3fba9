"""Recipe names -> recipe modules (imported on first use, so listing the recipes imports no gymnasium).

A recipe module defines ``NAME``, ``REFERENCE`` (the published result it is compared with), a dataclass ``Options``
(every hyper-parameter a field, with the reference implementation's defaults; ``total_timesteps``, ``seed``,
``backend``, ``out`` are common to all) and ``train(options) -> Summary``. Adding a recipe is one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["RECIPES", "get_recipe"]

RECIPES: dict[str, str] = {
    "dqn-cartpole": "arrayrl.recipes.dqn_cartpole",
    "ppo-cartpole": "arrayrl.recipes.ppo_cartpole",
    "sac-pendulum": "arrayrl.recipes.sac_pendulum",
    "td3-pendulum": "arrayrl.recipes.td3_pendulum",
}


def get_recipe(name: str) -> ModuleType:
    """The recipe module registered as ``name`` (``KeyError`` listing the known names otherwise)."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known recipes: {sorted(RECIPES)}")
    return importlib.import_module(RECIPES[name])

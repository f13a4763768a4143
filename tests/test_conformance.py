"""Every registered method passes the same conformance checks (:mod:`eegbench.testing`).

Synthetic EEG, tiny backbones, a few training steps: construct, count parameters, fit, generate
the right shapes/dtype reproducibly, save/load round trip.
"""

from __future__ import annotations

import pytest

from eegbench._compat import ensure_torchvision
from eegbench.plugins import get_plugin_manager
from eegbench.testing import (
    build,
    check_construction,
    check_declaration,
    check_embeddings,
    check_fit,
    check_generate,
    check_save_load,
    make_kit,
)

ensure_torchvision()

METHODS = sorted(get_plugin_manager().methods.names())


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return make_kit(tmp_path_factory.mktemp("conformance"))


@pytest.fixture(scope="module")
def fitted(kit):
    """One fitted instance per method (fitted once, shared by the checks below)."""
    cache = {}

    def get(name):
        if name not in cache:
            cls = get_plugin_manager().methods.get(name)
            method = build(cls, kit)
            check_fit(method, kit)
            cache[name] = method
        return cache[name]

    return get


def test_the_built_in_methods_are_registered():
    assert {"synapse", "dreamdiffusion", "brainvis", "gwit"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_declaration(name):
    check_declaration(get_plugin_manager().methods.get(name))


@pytest.mark.parametrize("name", METHODS)
def test_construction_and_parameter_counts(name, kit):
    method = build(get_plugin_manager().methods.get(name), kit)
    counts = check_construction(method)
    assert set(counts["per_stage"]) == set(method.stages)


@pytest.mark.parametrize("name", METHODS)
def test_fit_then_generate(name, kit, fitted):
    check_generate(fitted(name), kit)


@pytest.mark.parametrize("name", METHODS)
def test_save_load_round_trip(name, kit, fitted):
    check_save_load(get_plugin_manager().methods.get(name), fitted(name), kit)


#: Methods whose EEG encoder is aligned to the image embedder and so expose a retrieval embedding.
EMBEDDING_METHODS = {"synapse", "dreamdiffusion"}


@pytest.mark.parametrize("name", METHODS)
def test_retrieval_embeddings(name, kit, fitted):
    assert check_embeddings(fitted(name), kit) is (name in EMBEDDING_METHODS)

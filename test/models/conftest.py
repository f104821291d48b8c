import pytest

from models_testlib import make_sp_model, tiny_model


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory):
    return make_sp_model(tmp_path_factory.mktemp("sp"))


@pytest.fixture
def make_model(sp_model):
    def make(seed=0, **sections):
        return tiny_model(sp_model, seed, **sections)
    return make

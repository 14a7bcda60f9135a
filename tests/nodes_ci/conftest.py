import pytest

from tests.nodes_ci import fake_comfy


@pytest.fixture
def comfy(tmp_path):
    """A fake ComfyUI (folder_paths, comfy.*) with an empty models/ folder under tmp_path."""
    models = tmp_path / "models"
    models.mkdir()
    state = fake_comfy.install(str(models))
    state.models_dir = models
    from nodes import comfy_bridge

    comfy_bridge.register_model_folders()
    yield state
    fake_comfy.uninstall()

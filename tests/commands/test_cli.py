"""The command line composes components from YAML by class_path."""

import json
import os
from pathlib import Path

import pytest
import yaml

from dreamreward.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "render" / "fit_mesh.yaml"


def test_print_config_resolves_every_class_path(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIG), "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model = config["model"]
    assert model["class_path"].endswith("MeshReconstructionModule")
    assert model["init_args"]["dmtet"]["class_path"].endswith("DMTetGeometry")
    assert config["data"]["init_args"]["mesh"] == "ant.ply"


def test_bad_config_value_names_the_field(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIG), "--model.init_args.nerf_steps", "many"])
    assert "nerf_steps" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_mesh_job_reconstructs_the_ant(tmp_path):
    """The README's main job, unchanged but for the output folder: quality regression check."""
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIG),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    metrics = json.loads((Path(cli.trainer.log_dir) / "metrics.json").read_text())
    # measured 2026-11-24 on CPU: chamfer 0.0077, F-score 0.968, IoU 0.761, val PSNR 29.3 dB
    assert metrics["mesh/chamfer"] < 0.012, metrics
    assert metrics["mesh/fscore"] > 0.93, metrics
    assert metrics["mesh/iou"] > 0.7, metrics
    assert float(cli.trainer.callback_metrics["val/psnr"]) > 27.0


@pytest.mark.slow
@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=str)
def test_notebook_runs_in_fast_mode(notebook, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(notebook, as_version=4)
    os.environ["DREAMREWARD_FAST"] = "1"
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(notebook.parent)}},
        )
        client.execute()
    finally:
        os.environ.pop("DREAMREWARD_FAST", None)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors

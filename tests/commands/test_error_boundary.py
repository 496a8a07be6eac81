"""The command line's error boundary: user errors are one line and exit code 2, bugs keep
their traceback; ``--ckpt_path`` is checked before any work and never overrides the config."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamreward.error_boundary import InputError, run_with_error_boundary, user_error
from dreamreward.evaluate_dreamfl import read_prompt_file

ROOT = Path(__file__).resolve().parents[2]


def _project_error(tmp_path) -> FileNotFoundError:
    try:
        read_prompt_file(tmp_path / "none.txt")  # raised by the project's own check
    except FileNotFoundError as error:
        return error
    raise AssertionError("no error")


def test_user_error_follows_wrappers_to_the_project_check(tmp_path) -> None:
    cause = _project_error(tmp_path)
    try:
        raise RuntimeError("Does not validate against any of the Union subtypes") from cause
    except RuntimeError as wrapper:
        assert user_error(wrapper) is cause
    # a ValueError raised outside the package (a library, or here the test) is not the user's
    try:
        int("x")
    except ValueError as library_error:
        assert user_error(library_error) is None
    assert isinstance(user_error(InputError("named anywhere")), InputError)
    assert user_error(IndexError("a bug")) is None


def test_boundary_prints_one_line_and_exits_2(tmp_path, capsys) -> None:
    def run(argv):
        assert "--debug" not in argv
        read_prompt_file(tmp_path / "none.txt")

    with pytest.raises(SystemExit) as exit_info:
        run_with_error_boundary(run, ["evaluate-dreamfl"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no prompt file at {tmp_path / 'none.txt'}")
    assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit):  # --debug shows the traceback, and is not passed on
        run_with_error_boundary(run, ["evaluate-dreamfl", "--debug"])
    assert "Traceback" in capsys.readouterr().err


def test_boundary_keeps_bugs_and_reports_ctrl_c() -> None:
    def bug(argv):
        return [][1]

    with pytest.raises(IndexError):
        run_with_error_boundary(bug, [])

    def interrupted(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        run_with_error_boundary(interrupted, [])
    assert exit_info.value.code == 130


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DREAMREWARD_DEBUG": ""}
    return subprocess.run(
        [sys.executable, "-m", "dreamreward", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_cli_user_errors_exit_2_with_one_line(tmp_path) -> None:
    """Through ``python -m dreamreward``: a bad extra-command argument, a missing weights
    file named in a config, and truncated / random / missing ``--ckpt_path`` files."""
    result = _cli("sample", "--prompt", "   ")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.stderr

    missing = tmp_path / "nothing.pt"
    result = _cli(
        "fit",
        "--config",
        "configs/dreamfl/mvdream_sd21.yaml",
        "--trainer.accelerator",
        "cpu",
        "--trainer.logger",
        "false",
        f"--model.guidance.init_args.prior.init_args.path={missing}",
        "--model.dmtet.init_args.grid_resolution=8",
    )
    assert result.returncode == 2, result.stderr
    assert f"no MVDream weights at {missing}" in result.stderr
    assert "Traceback" not in result.stderr

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(b"PK\x03\x04" + os.urandom(200))
    for path, expected in (
        (truncated, "is not a complete PyTorch checkpoint"),
        (tmp_path / "absent.ckpt", "no file at"),
    ):
        result = _cli(
            "fit", "--config", "configs/dreamfl/primitives.yaml", "--ckpt_path", str(path)
        )
        assert result.returncode == 2, result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith("error: --ckpt_path: ") and expected in line and str(path) in line


def test_free_text_on_the_cpu_main_job_is_refused_before_any_work() -> None:
    """The CPU-scale prior knows primitives prompts only: a free-text prompt gets what it knows,
    an example and where free text goes, in one line, before training starts."""
    result = _cli(
        "fit",
        "--config",
        "configs/dreamfl/primitives.yaml",
        "--model.init_args.prompt",
        "a photo of a dog",
        "--trainer.logger",
        "false",
    )
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "outside what the CPU-scale prior knows" in line and "'a photo of a dog'" in line
    assert "e.g. 'a red cube on top of a blue sphere'" in line and "mvdream_sd21.yaml" in line
    assert "Traceback" not in result.stderr and "Epoch" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["score", "--inputs", "no/such/folder", "--out", "s.csv"], "input not found: no/such"),
        (["score", "--inputs", ".", "--out", "s.txt"], "--out must end in .csv or .json"),
        (["build-primitives", "--out", "never", "--num_prompts", "0"], "--num_prompts must be"),
        (["evaluate-dreamfl", "--prompts", "none.txt"], "no prompt file at none.txt"),
        (["evaluate-reward3d", "--data", "no/such/set"], "no/such/set"),
        (["sample", "--prompt", "a red cube", "--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_every_extra_command_reports_bad_arguments_in_one_line(argv, expected, capsys):
    """The extra commands behind the boundary (in process: the same path as the script)."""
    from dreamreward.cli import main

    with pytest.raises(SystemExit) as exit_info:
        run_with_error_boundary(main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and expected in err[-1], err
    assert not any("Traceback" in line for line in err)

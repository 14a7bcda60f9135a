"""`xdyna batch --engine ray` before any work (no Ray needed): each job's keys are read by `animate`'s
own option definitions and checked, a bad one names the job and the option; a missing Ray is one line
that says how to install it."""
import json
import sys

import pytest

from tests.conftest import assets_dir
from xdyna_core.cli import build_parser, main


def _jobs(tmp_path, *extra, defaults=None):
    a = assets_dir()
    jobs = [{"name": f"j{k}", "reference": str(a / "reference_image" / "example_1.png"),
             "driving": str(a / "driving_video" / "example_1_driving_1.mp4")} for k in range(8)]
    for k, keys in extra:
        jobs[k].update(keys)
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({"defaults": defaults or {}, "jobs": jobs}))
    return path


def _prepare(tmp_path, jobs, *argv):
    from xdyna_core.cli.batch import prepare_ray_jobs

    args = build_parser().parse_args(["batch", "--engine", "ray", "--jobs", str(jobs), "--out", str(tmp_path / "o"),
                                      "--models", str(tmp_path / "not_here"), *argv])
    return prepare_ray_jobs(args)


def _error(tmp_path, jobs, *argv) -> str:
    from xdyna_core.batch.jobs import JobListError

    with pytest.raises(JobListError) as e:
        _prepare(tmp_path, jobs, *argv)
    return str(e.value)


def test_job_keys_are_animate_options_over_the_commands_defaults(tmp_path):
    pose = assets_dir() / "poses" / "example_1_pose_1.mp4"
    jobs = _jobs(tmp_path, (1, {"steps": 3, "size": "128x192", "face": "off", "align": True,
                                "negative-prompt": "-blurry", "pose": str(pose)}),
                 defaults={"seed": 7})
    prepared = _prepare(tmp_path, jobs, "--steps", "2", "--cfg", "3", "--align")
    (_, o0), (_, o1) = prepared[0], prepared[1]
    assert (o0.sampling.steps, o0.sampling.cfg, o0.sampling.seed, o0.align, o0.face) == (2, 3.0, 7, True, True)
    assert (o0.width, o0.height) == (512, 896) and o0.pose_video is None
    assert (o1.sampling.steps, o1.sampling.cfg, (o1.width, o1.height), o1.face) == (3, 3.0, (128, 192), False)
    assert o1.align is True and o1.negative_prompt == "-blurry" and o1.pose_video == str(pose)
    assert len(prepared) == 8


@pytest.mark.parametrize("keys, says", [
    ({"steps": 0}, "job j6: argument --steps: expected a whole number >= 1, got '0'"),
    ({"size": "130x192"}, "job j6: argument --size"),
    ({"face": "maybe"}, "job j6: argument --face: invalid choice: 'maybe'"),
    ({"align": "yes"}, "job j6: --align takes true or false, got 'yes'"),
    ({"stepz": 3}, "job j6: 'stepz' is not an animate option"),
    ({"precision": "fp16"}, "job j6: 'precision' decides how the models load"),
    ({"context_length": 4, "context_overlap": 4}, "job j6: --context-overlap 4 must be smaller than --context-length 4"),
    ({"pose": "missing.mp4"}, "job j6: --pose"),
])
def test_a_bad_job_is_named_before_any_work(tmp_path, keys, says):
    assert says in _error(tmp_path, _jobs(tmp_path, (6, keys)))


def test_the_batch_commands_own_option_values_are_checked_as_animates(tmp_path):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["batch", "--engine", "ray", "--jobs", "j", "--out", "o", "--steps", "0"])


def test_missing_ray_is_one_line_with_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)     # import ray -> ImportError
    code = main(["batch", "--engine", "ray", "--jobs", str(_jobs(tmp_path)), "--out", str(tmp_path / "o"),
                 "--models", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: --engine ray needs Ray") and 'pip install ".[ray]"' in err[0]


def test_ray_is_not_imported_by_the_command_line(tmp_path):
    import subprocess

    code = ("import sys; from xdyna_core.cli import build_parser; build_parser(); "
            "import xdyna_core.cli.batch, xdyna_core.batch.ray_engine; print('ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=str(assets_dir().parents[2]))
    assert r.stdout.strip() == "False", r.stderr

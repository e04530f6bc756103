"""The ``iif`` dispatcher: every sub-command registers, and bad input is one line with exit code 2."""

import pytest

from iif.cli import COMMANDS, build_parser, main


def test_every_subcommand_registers():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(COMMANDS)


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert main(["stats", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iif stats: error:") and "nope.json" in err[0]


def test_unknown_dataset_names_the_known_ones(tmp_path, capsys):
    assert main(["bench", "--dataset", "cifar1000-lt", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cifar1000-lt" in err and "digits-lt" in err
    assert not (tmp_path / "o" / "results.json").exists()


def test_version_is_the_installed_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"iif {version('iif')}"


def test_print_config_is_the_resolved_config_and_trains_nothing(tmp_path, capsys, monkeypatch):
    import yaml

    from iif.train import load_config
    from iif.train.config import config_to_dict

    monkeypatch.chdir(tmp_path)
    assert main(["train", "digits_lt_e2e", "optim.lr=0.2", "schedule.epochs=3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 0.2 and printed["schedule"]["epochs"] == 3
    assert printed == config_to_dict(load_config("digits_lt_e2e", ["optim.lr=0.2", "schedule.epochs=3"]))
    assert load_config(printed) == load_config("digits_lt_e2e", ["optim.lr=0.2", "schedule.epochs=3"])
    assert list(tmp_path.iterdir()) == []  # no run folder


def test_list_gives_every_packaged_config_its_description(capsys):
    import yaml

    from iif.train import packaged_configs
    from iif.train.config import resolve_config_path

    assert main(["train", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = packaged_configs()
    assert [ln.split()[0] for ln in lines] == names
    for name, line in zip(names, lines):
        desc = yaml.safe_load(resolve_config_path(name).read_text(encoding="utf-8")).get("description")
        assert isinstance(desc, str) and desc and line.rstrip().endswith(desc), name


def test_help_texts_carry_no_markup(capsys):
    import re

    for name in ("", *COMMANDS):
        with pytest.raises(SystemExit):
            main([name, "--help"] if name else ["--help"])
        out = capsys.readouterr().out
        assert "`" not in out and not re.search(r":(func|class|mod|meth|data):", out), name


def test_python_dash_m_iif_runs_the_command():
    """``python -m iif`` is the ``iif`` script: same version line, same exit code for bad input."""
    import subprocess
    import sys
    from importlib.metadata import version

    done = subprocess.run([sys.executable, "-m", "iif", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"iif {version('iif')}"
    bad = subprocess.run([sys.executable, "-m", "iif", "stats", "/nonexistent/labels.json"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1

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

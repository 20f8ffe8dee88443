import subprocess
import sys

from click.testing import CliRunner

from edgeship import __version__
from edgeship.cli import cli


def test_version_and_help():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "calibrate" in r.output


def test_every_registered_command_has_help_with_an_example():
    runner = CliRunner()
    for name in cli.list_commands(None):
        r = runner.invoke(cli, [name, "--help"])
        assert r.exit_code == 0, (name, r.output)
        assert "Example" in r.output or "example" in r.output, f"{name} --help has no example"


def one_line(r) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    return lines[0]


def test_a_rejected_command_line_is_one_line_exit_1_naming_the_value_and_the_help():
    def invoke(args):
        return CliRunner().invoke(cli, args, prog_name="edgeship")

    r = invoke(["frobnicate"])
    assert r.exit_code == 1 and one_line(r) == "error: No such command 'frobnicate'. (see 'edgeship --help')"
    r = invoke(["run", "m.tflite", "--source", "0", "--threads", "0"])
    assert r.exit_code == 1
    assert one_line(r) == "error: Invalid value for '--threads': 0 is not in the range 1<=x<=256. (see 'edgeship run --help')"
    r = invoke(["run", "m.tflite", "--thread", "2"])
    assert r.exit_code == 1 and "No such option '--thread'" in one_line(r) and "'--threads'" in one_line(r)
    r = invoke(["run", "m.tflite", "--source"])
    assert r.exit_code == 1 and one_line(r) == "error: Option '--source' requires an argument. (see 'edgeship run --help')"
    r = invoke(["targets", "show"])
    assert r.exit_code == 1 and one_line(r) == "error: Missing argument 'NAME'. (see 'edgeship targets show --help')"
    r = invoke(["--bogus"])
    assert r.exit_code == 1 and one_line(r).startswith("error: No such option '--bogus'.")
    r = invoke([])  # a group without a command shows its help, and exits 1 like any incomplete command line
    assert r.exit_code == 1 and "Commands:" in r.output
    r = invoke(["device"])
    assert r.exit_code == 1 and "status" in r.output


def test_help_does_not_import_tensorflow():
    code = ("import sys\nfrom edgeship.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('tensorflow','keras','nncf','openvino') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_missing_input_file_is_one_line_exit_1(tmp_path):
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "missing.keras"), "-f", "tflite", "-o", str(tmp_path / "out")])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: MODEL:") and "missing.keras" in lines[0]
    assert not (tmp_path / "out").exists()
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "missing.keras"), "-f", "nope", "-o", str(tmp_path)])
    assert r.exit_code == 1 and "Invalid value for '-f' / '--format': 'nope' is not one of" in one_line(r)

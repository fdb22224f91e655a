"""`balabol` on cyclopts: each subcommand's help lists its own options; config dataclasses are
the flags (`--x/--no-x` for booleans); every spelling users have in scripts still parses; a
bad value is a one-line error; `--help` imports neither torch nor the stages."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
from cyclopts import App

from balabol import __version__
from balabol.cli import _adapt, build_app, main
from tests.training.data import FIXTURES
from training.data.clean import STEPS

ROOT = Path(__file__).parents[2]
JOKES = FIXTURES / "corpus" / "jokes_blank.txt"


def parse(*tokens: str) -> dict:
    """The arguments a command would be called with (nothing runs)."""
    _, bound, _ = build_app().parse_args(list(tokens), exit_on_error=False, print_error=False)
    return dict(bound.arguments)


def corpus_config(tmp_path, capsys, *flags: str) -> dict:
    args = ["data", "corpus", "--input", str(JOKES), "--name", "j", "--out-dir", str(tmp_path)]
    assert main([*args, "--separator", "blank", *flags]) == 0
    capsys.readouterr()
    stats = json.loads((tmp_path / "j" / "stats.json").read_text(encoding="utf-8"))
    return stats["config"]


# --- help -------------------------------------------------------------------------------------


def flags_in(text: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z0-9-]*", text))


SOURCE_FLAGS = {
    "telegram": {
        "--persona",
        "--gap-minutes",
        "--max-turns",
        "--media",
        "--sticker-emoji",
        "--chat",
    },
    "dialogues": {"--question-column", "--answer-column", "--session-column", "--batch-rows"},
    "corpus": {"--separator", "--prompt"},
}
SHARED_FLAGS = {"--input", "--name", "--out-dir", "--dedup", "--min-chars", "--max-chars"}
SHARED_FLAGS |= {"--placeholders", "--no-placeholders", "--val-fraction", "--seed", "--tokenizer"}
SHARED_FLAGS |= {f"--{step}" for step in STEPS} | {f"--no-{step}" for step in STEPS}


@pytest.mark.parametrize("source", SOURCE_FLAGS)
def test_a_data_source_help_lists_only_its_own_options(source, capsys):
    assert main(["data", source, "--help"]) == 0
    shown = flags_in(capsys.readouterr().out)
    others = set().union(*(f for s, f in SOURCE_FLAGS.items() if s != source))
    assert SOURCE_FLAGS[source] | SHARED_FLAGS <= shown
    assert not shown & others
    assert "--ignore-eos" not in shown and "--steps" not in shown  # fields kept off the CLI


def test_help_comes_from_the_config_fields(capsys):
    main(["data", "telegram", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "a longer pause (minutes) starts a new session" in out  # TelegramConfig.gap_minutes
    assert STEPS["links"].help in out  # the cleaning step registry
    main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "sample among the k likeliest tokens (0 = all)" in out  # GenerationConfig.top_k
    assert "[default: 128]" in out  # generate's own max_new_tokens default


def test_root_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("data", "train", "eval", "export", "generate", "chat", "bot"):
        assert re.search(rf"^\W*{command}\s+\w", out, re.M), command  # name and its help
    assert "--install-completion" in out


# --- --x/--no-x -------------------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_each_cleaning_step_has_a_flag_and_its_negative(step, tmp_path, capsys):
    on = corpus_config(tmp_path / "on", capsys, f"--{step}")["steps"]
    off = corpus_config(tmp_path / "off", capsys, f"--no-{step}")["steps"]
    assert step in on and step not in off
    assert set(on) - {step} == set(off)


def test_boolean_fields_take_x_and_no_x(tmp_path, capsys):
    assert corpus_config(tmp_path / "a", capsys, "--no-placeholders")["placeholders"] is False
    assert corpus_config(tmp_path / "b", capsys, "--placeholders")["placeholders"] is True
    assert parse("generate", "hi", "--raw")["raw"] is True
    assert parse("generate", "hi", "--no-raw")["raw"] is False
    assert parse("export", "--force")["force"] is True  # a legacy-form command too


# --- old spellings ------------------------------------------------------------------------------


def test_old_spellings_parse():
    telegram = ["data", "telegram", "--input", "x.json", "--name", "me", "--persona", "Anna"]
    config = parse(*telegram, "--no-sticker-emoji", "--chat", "A", "B", "--no-links", "--emoji")
    assert (config["config"].sticker_emoji, config["config"].chats) == (False, ("A", "B"))
    assert (config["steps"].links, config["steps"].emoji) == (False, True)
    qa = parse("data", "dialogues", "--input", "qa.csv", "--name", "qa", "--question-column", "q")
    assert qa["config"].question == "q"
    generate = parse("generate", "--artifact", "me", "Tell me a joke", "--stop", "User:", "Bot:")
    assert (generate["prompt"], generate["config"].stop) == ("Tell me a joke", ("User:", "Bot:"))
    export = parse("export", "--formats", "onnx", "gguf-q8_0", "--skip-existing")
    assert (export["formats"], export["skip_existing"]) == (["onnx", "gguf-q8_0"], True)
    train = parse("train", "--no-gradient-checkpointing", "--batching", "grouped")
    assert (train["no_gradient_checkpointing"], train["batching"]) == (True, "grouped")


def readme_commands() -> list[str]:
    """Every `balabol ...` line of README.md's code blocks and the Makefile's recipes."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", readme, re.S | re.M)
    lines = [line for block in blocks for line in block.splitlines()]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipes = re.findall(r"\$\(BIN\)/(balabol .*)", makefile)
    lines += [re.sub(r"\$\(\w+\)", "x", m.replace("$(ARGS)", "")) for m in recipes]
    commands = []
    for line in lines:
        for part in line.split("#")[0].split("&&"):
            if part.strip().startswith("balabol "):
                commands.append(part.strip())
    return commands


@pytest.mark.parametrize("line", readme_commands())
def test_readme_and_makefile_commands_parse(line):
    tokens = shlex.split(line)[1:]
    parse(*tokens)  # raises on an unknown flag or a bad value


def test_readme_commands_were_found():
    assert len(readme_commands()) >= 15


# --- errors -------------------------------------------------------------------------------------


def test_a_bad_value_is_one_readable_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "hi", "--max-new-tokens", "many"])
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        'error: Invalid value for --max-new-tokens: unable to convert "many" into int.\n'
        "see: balabol generate --help\n"
    )


def test_a_bad_choice_names_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["data", "corpus", "--input", "x", "--name", "n", "--separator", "tab"])
    assert capsys.readouterr().err == (
        "error: --separator: invalid choice: 'tab' (choose from line, blank)\n"
        "see: balabol data corpus --help\n"
    )


def test_an_unknown_option_suggests_one(capsys):
    with pytest.raises(SystemExit):
        main(["data", "telegram", "--no-link"])
    assert capsys.readouterr().err.startswith(
        "error: Unknown option: --no-link. Did you mean --no-links?\n"
    )


def test_an_unknown_command_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["frobnicate"])
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'frobnicate'; the commands are: bot, chat, data")


def test_a_value_the_config_rejects_is_a_balabol_error(capsys):
    # GenerationConfig validates itself while cyclopts builds it: exit 1, the config's message
    assert main(["generate", "hi", "--temperature", "9"]) == 1
    err = capsys.readouterr().err
    assert err == "error: --temperature 9.0 is invalid: must be between 0 (greedy) and 5\n"


# --- the legacy form: Annotated[T, "help"] ------------------------------------------------------


def test_legacy_help_strings_become_cyclopts_help(capsys):
    def legacy(
        *,
        steps: Annotated[int, "optimizer steps (default: 5%% of an epoch)"] = 1,
        no_cache: Annotated[bool, "keep nothing between runs"] = False,
    ) -> int:
        """A legacy command."""
        return steps + 10 * no_cache

    app = App(name="legacy", result_action="return_value")
    app.default(_adapt(legacy))
    assert app(["--steps", "3", "--no-cache"]) == 13
    app(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "optimizer steps (default: 5% of an epoch)" in out
    assert "keep nothing between runs" in out and "--no-no-cache" not in out


# --- version, completion, lazy loading --------------------------------------------------------


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"balabol {__version__}\n"


def test_completion_installs_a_script(tmp_path, capsys):
    out = tmp_path / "balabol.fish"  # fish: no rc file to edit
    main(["--install-completion", "--shell", "fish", "--output", str(out)])
    assert "balabol" in out.read_text(encoding="utf-8")


def test_help_imports_no_stage_and_no_torch():
    code = (
        "import sys\n"
        "from balabol.cli import main\n"
        "main(['--help'])\n"
        "loaded = lambda: sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'numpy', 'training', 'export', 'runtime', 'bot'})\n"
        "print('root help loaded', loaded(), file=sys.stderr)\n"
        "for cmd in ('data', 'train', 'eval', 'export', 'generate', 'chat', 'bot'):\n"
        "    main([cmd, '--help'])\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # `balabol --help` reads each command's help from its source: it imports no stage
    assert out.stderr.splitlines() == ["root help loaded []", "False"]

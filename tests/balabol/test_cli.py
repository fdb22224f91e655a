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

import pytest

from balabol import __version__
from balabol.cli import build_app, main
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
        "--mode",
        "--prompt",
        "--signatures",
    },
    "dialogues": {
        *("--question-column", "--answer-column", "--session-column", "--batch-rows"),
        "--max-turns",
    },
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
    assert not shown & (others - SOURCE_FLAGS[source])  # --prompt, --max-turns: shared names
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


# The flags of the commands that once re-listed their config's fields: the same names, now with
# the positive form of each boolean (`--gradient-checkpointing`, `--assistant-only`).
COMMAND_FLAGS = {
    "train": {
        *("--arch", "--data", "--name", "--out-dir", "--max-length", "--epochs", "--max-steps"),
        *("--lr", "--warmup-steps", "--batch-size", "--micro-batch-size", "--eval-every"),
        *("--device", "--seed", "--resume", "--no-resume", "--force", "--no-force"),
        *("--assistant-only", "--all-tokens", "--no-all-tokens"),
        *("--base", "--qlora", "--no-qlora", "--lora-r", "--lora-alpha", "--lora-dropout"),
        *("--gradient-checkpointing", "--no-gradient-checkpointing", "--batching"),
        *("--vocab-size", "--n-layer", "--n-embd", "--n-head", "--dropout"),
    },
    "eval": {
        *("--data", "--base", "--adapter", "--artifact", "--format", "--limit"),
        *("--max-new-tokens", "--batch-size", "--out", "--artifacts-dir"),
    },
    "export": {
        *("--base", "--adapter", "--name", "--out-dir", "--formats", "--force", "--no-force"),
        *("--skip-existing", "--no-skip-existing", "--allow-failed", "--no-allow-failed"),
        *("--verbose", "--no-verbose"),
    },
}


@pytest.mark.parametrize("command", COMMAND_FLAGS)
def test_config_commands_keep_their_flags(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # no flag cut by a line break
    assert main([command, "--help"]) == 0
    shown = flags_in(capsys.readouterr().out)
    assert shown - {"--help", "--version"} == COMMAND_FLAGS[command]


def test_config_commands_take_their_help_from_the_fields(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one line per flag
    main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "passes over train.jsonl [default: 3.0]" in out  # RunConfig.epochs
    assert "LoRA rank [default: 16]" in out  # TrainConfig.lora_r
    assert "layers (default: gpt-scratch 10, lstm 2)" in out  # ScratchConfig.n_layer
    assert "LoRA (--arch lora)" in out and "From scratch (--arch gpt-scratch, lstm)" in out
    main(["eval", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "score the first N val samples (0: all) [default: 200]" in out  # EvalConfig.limit
    main(["export", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "replace an existing artifact of the same name" in out  # ExportConfig.force
    assert "where artifacts go (default: ./artifacts or $BALABOL_ARTIFACTS)" in out
    # a default the help words better than its value is not printed
    assert "[default: artifacts]" not in out and "[default: ('torch'" not in out


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
    assert parse("export", "--force")["config"].force is True
    assert parse("export", "--no-force")["config"].force is False
    assert parse("train", "--no-qlora")["options"].qlora is False


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
    assert (export["config"].formats, export["skip_existing"]) == (
        ("torch", "onnx", "gguf-q8_0"),  # torch, the reference, is always built
        True,
    )
    export = parse("export", "--allow-failed", "--verbose", "--force")
    assert (export["allow_failed"], export["verbose"], export["config"].force) == (True,) * 3
    train = parse("train", "--no-gradient-checkpointing", "--batching", "grouped", "--qlora")
    options = train["options"]
    assert (options.gradient_checkpointing, options.batching, options.qlora) == (
        False,
        "grouped",
        True,
    )
    assert parse("train", "--all-tokens")["options"].assistant_only is False
    assert parse("train", "--no-all-tokens")["options"].assistant_only is True
    evaluate = parse("eval", "--data", "d", "--artifact", "me", "--format", "onnx-int8")
    assert (evaluate["config"].artifact, evaluate["config"].format) == ("me", "onnx-int8")


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
        main(["data", "telegram", "--input", "x", "--name", "n", "--mode", "chat"])
    assert capsys.readouterr().err == (
        "error: --mode: invalid choice: 'chat' (choose from auto, dialogue, posts)\n"
        "see: balabol data telegram --help\n"
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
        "loaded = lambda *names: sorted({m.split('.')[0] for m in sys.modules} & set(names))\n"
        "print('root help loaded', loaded('torch', 'numpy', *STAGES), file=sys.stderr)\n"
        # the light ones first: the modules a command's help imports stay imported
        "for cmd in ('data', 'train', 'export', 'bot', 'eval', 'generate', 'chat'):\n"
        "    main([cmd, '--help'])\n"
        "    print(cmd, loaded('torch', 'numpy'), file=sys.stderr)\n"
    )
    stages = "STAGES = ('training', 'export', 'runtime', 'bot')\n"
    out = subprocess.run(
        [sys.executable, "-c", stages + code], capture_output=True, text=True, check=True
    )
    # `balabol --help` reads each command's help from its source: it imports no stage; a
    # command's help imports its module, which leaves torch (and for most, numpy) to the run
    assert out.stderr.splitlines() == [
        "root help loaded []",
        *("data []", "train []", "export []", "bot []"),
        *("eval ['numpy']", "generate ['numpy']", "chat ['numpy']"),  # runtime.score, runtime.base
    ]

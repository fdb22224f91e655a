"""balabol/quiet.py: library output is kept out of the way, and shown when a step fails."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import warnings

import pytest

from balabol.quiet import is_verbose, quiet, verbosity


def noisy(tag: str) -> None:
    """What the libraries of an export do: print, write to the fds from C, log, warn."""
    print(f"{tag} print")
    sys.stdout.flush()
    os.write(2, f"{tag} fd 2\n".encode())
    libc = ctypes.CDLL(None)
    libc.printf(f"{tag} from C\n".encode())  # buffered by C stdio: quiet flushes it
    logging.getLogger("transformers.modeling_utils").warning("%s log", tag)
    warnings.warn(f"{tag} warning", DeprecationWarning, stacklevel=1)


def test_everything_is_captured_and_kept(capfd, caplog):
    lib = logging.getLogger("transformers")
    before = (lib.handlers[:], lib.propagate)
    with quiet() as said:
        noisy("lib")
    assert capfd.readouterr() == ("", "")
    assert said.output.splitlines() == ["lib print", "lib fd 2", "lib from C"]
    assert said.logs == ["WARNING transformers.modeling_utils: lib log"]
    assert len(said.warnings) == 1 and said.warnings[0].startswith(
        "DeprecationWarning: lib warning"
    )
    # everything is put back as it was
    assert (lib.handlers, lib.propagate) == before and caplog.messages == []
    print("after")
    lib.warning("after log")
    assert capfd.readouterr().out == "after\n" and caplog.messages == ["after log"]


def test_a_failure_shows_what_was_captured(capfd):
    with pytest.raises(RuntimeError, match="broke"), quiet():
        print("the library's last words")
        raise RuntimeError("broke")
    out, err = capfd.readouterr()
    assert out == "" and err == "the library's last words\n"


def test_verbose_lets_everything_through(capfd):
    assert not is_verbose()
    with verbosity(True):
        assert is_verbose()
        with quiet() as said, pytest.warns(DeprecationWarning, match="lib warning"):
            noisy("lib")
    assert not is_verbose()
    out, err = capfd.readouterr()
    assert "lib print" in out and "lib from C" in out and "lib fd 2" in err
    assert said.text == ""

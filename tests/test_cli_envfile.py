"""Environment files, read with python-dotenv: its documented grammar, and our errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from aioproc._cli._envfile import merge_env_files, read_env_file
from aioproc._cli._errors import ConfigError


def _write(tmp_path: Path, data: str | bytes, name: str = ".env") -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def test_python_dotenvs_grammar(tmp_path: Path) -> None:
    # The cases of python-dotenv's documented file format, each as it reads them.
    path = _write(
        tmp_path,
        "# a comment\n"
        "export EXPORTED=1\n"
        "SPACED = two words # a comment after a space\n"
        'ESCAPED="b\\"c"\n'
        "SINGLE='$literal? no: ${EXPORTED}'\n"
        "SINGLE_ESCAPED='it\\'s'\n"
        'TAB="a\\tb"\n'
        'NEWLINE="a\\nb"\n'
        'MULTI="first\nsecond"\n'
        "'QUOTED KEY'=q\n"
        "BARE\n"
        "EMPTY=\n"
        'HASH="not # a comment"\n',
    )
    assert read_env_file(path) == {
        "EXPORTED": "1",
        "SPACED": "two words",
        "ESCAPED": 'b"c',
        # python-dotenv expands ${...} in single quotes too (docs/cli.md says so).
        "SINGLE": "$literal? no: 1",
        "SINGLE_ESCAPED": "it's",
        "TAB": "a\tb",
        "NEWLINE": "a\nb",
        "MULTI": "first\nsecond",
        "QUOTED KEY": "q",
        "EMPTY": "",
        "HASH": "not # a comment",
    }


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "\ufeffFIRST=1\nSECOND=2\n".encode())
    assert read_env_file(path) == {"FIRST": "1", "SECOND": "2"}


def test_windows_line_ends(tmp_path: Path) -> None:
    path = _write(tmp_path, b"A=1\r\nB='2'\r\n")
    assert read_env_file(path) == {"A": "1", "B": "2"}


def test_expansion_from_the_file_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FROM_OUTSIDE", "outside")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    path = _write(
        tmp_path,
        "DOMAIN=example.org\n"
        "ADMIN=admin@${DOMAIN}\n"
        'OUT="${FROM_OUTSIDE}/x"\n'
        "DEFAULT=${NOT_SET_ANYWHERE:-fallback}\n"
        "MISSING=${NOT_SET_ANYWHERE}\n"
        "NO_BRACES=$DOMAIN\n",
    )
    assert read_env_file(path) == {
        "DOMAIN": "example.org",
        "ADMIN": "admin@example.org",
        "OUT": "outside/x",
        "DEFAULT": "fallback",
        "MISSING": "",
        "NO_BRACES": "$DOMAIN",
    }


BAD = [
    ("A=1\n=no name\n", 2),
    ('A=1\nB="unterminated\nC=3\n', 2),
    ("A=1\n\nB 'x'\n", 3),
]


@pytest.mark.parametrize(("text", "line"), BAD)
def test_a_line_python_dotenv_cannot_parse_is_an_error_naming_it(
    tmp_path: Path, text: str, line: int
) -> None:
    # python-dotenv itself only logs a warning and drops the line: a lost value.
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_env_file(path)
    assert str(info.value).startswith(f"{path}:{line}: expected KEY=VALUE")
    assert "\n" not in str(info.value)


def test_unreadable_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.env: cannot read: No such file"):
        read_env_file(tmp_path / "missing.env")
    path = _write(tmp_path, b"A=\xff\n")
    with pytest.raises(ConfigError, match=r"\.env: not UTF-8 text"):
        read_env_file(path)


def test_a_nul_byte_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, b"A=x\x00y\n")
    with pytest.raises(ConfigError, match=r"\.env:1: the value of A holds a NUL byte"):
        read_env_file(path)


def test_later_files_win(tmp_path: Path) -> None:
    first = _write(tmp_path, "A=1\nB=1\n", "first.env")
    second = _write(tmp_path, "B=2\nC=2\n", "second.env")
    assert merge_env_files([first, second]) == {"A": "1", "B": "2", "C": "2"}

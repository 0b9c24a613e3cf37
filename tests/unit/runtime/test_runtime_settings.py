"""The one environment loader: field → variable, parsing by type, errors that name the variable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether_runtime.settings import EnvLoader, SettingsError, parser_for


@dataclass(frozen=True, slots=True)
class Demo:
    host: str = "127.0.0.1"
    port: int = 8080
    ratio: float = 0.5
    dev: bool = False
    deflate: bool = True
    log_format: Literal["text", "json"] = "text"
    workers: tuple[str, ...] = ("a:1",)
    sizes: tuple[int, ...] = (1, 2)
    bounded: float | None = None
    namespace: str | None = None
    secret: str = field(default="", repr=False)
    nested: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 0..65535")


class OwnError(Exception):
    """A service's own configuration error."""


LOADER = EnvLoader(Demo, "T_", exclude=("nested",), hidden=("secret",))


def test_every_field_reads_its_upper_case_variable() -> None:
    assert dict(LOADER.variables) == {
        name: "T_" + name.upper()
        for name in (
            "host", "port", "ratio", "dev", "deflate", "log_format", "workers", "sizes", "bounded",
            "namespace", "secret",
        )
    }  # fmt: skip


def test_values_are_parsed_by_the_field_type() -> None:
    settings = LOADER.load(
        {
            "T_HOST": " 0.0.0.0 ",
            "T_PORT": "9000",
            "T_RATIO": "0.25",
            "T_DEV": "Yes",
            "T_DEFLATE": "off",
            "T_LOG_FORMAT": "JSON",
            "T_WORKERS": "a:1, b:2,,",
            "T_SIZES": "3,4",
            "T_BOUNDED": "1.25",
            "T_NAMESPACE": "none",
            "OTHER": "ignored",
        }
    )
    assert settings == Demo(
        host="0.0.0.0",
        port=9000,
        ratio=0.25,
        dev=True,
        deflate=False,
        log_format="json",  # the declared spelling
        workers=("a:1", "b:2"),
        sizes=(3, 4),
        bounded=1.25,
        namespace="none",  # a str | None field takes the text as it is
    )
    assert LOADER.load({"T_BOUNDED": "OFF"}).bounded is None


def test_an_empty_or_blank_variable_is_unset() -> None:
    assert LOADER.load({"T_HOST": "", "T_PORT": "  ", "T_DEFLATE": "", "T_WORKERS": ""}) == Demo()


def test_keep_empty_fields_take_an_empty_variable_as_a_value() -> None:
    loader = EnvLoader(Demo, "T_", exclude=("nested",), keep_empty=("workers", "host"))
    assert loader.load({"T_WORKERS": "", "T_HOST": ""}) == Demo(workers=(), host="")


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        ("T_PORT", "eighty", "T_PORT='eighty' is not a valid int (setting port)"),
        ("T_RATIO", "nan", "T_RATIO='nan' is not a valid float (a finite number) (setting ratio)"),
        ("T_RATIO", "inf", "is not a valid float"),
        ("T_DEV", "maybe", "T_DEV='maybe' is not a valid bool"),
        ("T_LOG_FORMAT", "xml", "T_LOG_FORMAT='xml' is not one of text, json (setting log_format)"),
        ("T_SIZES", "1,x", "T_SIZES='1,x' is not a valid list of int (comma-separated) (setting sizes)"),
        ("T_BOUNDED", "many", "is not a valid float (a finite number) or none/off (setting bounded)"),
    ],
)
def test_a_bad_text_names_the_variable_its_text_and_the_field(
    variable: str, text: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        LOADER.load({variable: text})
    assert expected in str(caught.value)


def test_a_hidden_field_never_shows_its_text() -> None:
    loader = EnvLoader(Demo, "T_", names={"port": "PORT"}, hidden=("port",))
    with pytest.raises(SettingsError, match="T_PORT=<not shown> is not a valid int") as caught:
        loader.load({"T_PORT": "hunter2"})
    assert "hunter2" not in str(caught.value)


def test_the_service_error_class_is_raised() -> None:
    loader = EnvLoader(Demo, "T_", exclude=("nested",), error=OwnError)
    with pytest.raises(OwnError, match="T_PORT"):
        loader.load({"T_PORT": "x"})
    with pytest.raises(OwnError, match="unknown settings: colour"):
        loader.load({}, colour="blue")


def test_names_choose_and_rename_the_fields_read() -> None:
    loader = EnvLoader(Demo, "T_", names={"port": "LISTEN_PORT"})
    assert dict(loader.variables) == {"port": "T_LISTEN_PORT"}
    assert loader.load({"T_LISTEN_PORT": "1", "T_PORT": "2", "T_HOST": "h"}) == Demo(port=1)
    with pytest.raises(TypeError, match="no fields"):
        EnvLoader(Demo, "T_", names={"colour": "COLOUR"})


def test_overrides_win_and_none_means_not_given() -> None:
    settings = LOADER.load({"T_PORT": "9000", "T_HOST": "h"}, port=7000, host=None)
    assert (settings.port, settings.host) == (7000, "h")


def test_the_class_checks_still_run() -> None:
    with pytest.raises(ValueError, match="port 70000"):
        LOADER.load({"T_PORT": "70000"})


def test_parse_names_the_flag_it_was_given() -> None:
    assert LOADER.parse("sizes", "5, 6") == (5, 6)
    with pytest.raises(SettingsError, match="--sizes='x' is not a valid list of int"):
        LOADER.parse("sizes", "x", source="--sizes")


def test_a_field_type_the_loader_cannot_read_fails_when_declared() -> None:
    with pytest.raises(TypeError, match="no environment parser"):
        EnvLoader(Demo, "T_")  # `nested` is a dict
    with pytest.raises(TypeError, match="not a dataclass"):
        EnvLoader(int, "T_")


@given(st.integers())
def test_any_int_round_trips(value: int) -> None:
    assert parser_for(int).parse(str(value)) == value


@given(st.lists(st.integers(min_value=-(10**6), max_value=10**6)))
def test_any_int_list_round_trips(values: list[int]) -> None:
    assert parser_for(tuple[int, ...]).parse(",".join(map(str, values))) == tuple(values)

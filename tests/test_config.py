"""Node configuration: defaults, bmnode.toml, flags, precedence, and every bad value."""

from __future__ import annotations

import argparse
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmnode.errors import ConfigError
from bmnode.node.config import (
    CONFIG_FILE,
    HostPort,
    NodeConfig,
    add_run_arguments,
    config_from_args,
    default_data_dir,
    load_config,
    parse_host_port,
    parse_network_pow,
)


def write(data_dir: Path, text: str) -> Path:
    path = data_dir / CONFIG_FILE
    path.write_text(text, encoding="utf-8")
    return path


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bmnode run")
    add_run_arguments(p)
    return p


# ---------------------------------------------------------------------------- defaults


def test_defaults(tmp_path):
    c = load_config(tmp_path)
    assert c.data_dir == tmp_path
    assert c.listen == HostPort("0.0.0.0", 8444) and str(c.listen) == "0.0.0.0:8444"
    assert c.peers == ()
    assert c.bootstrap is True and c.tls is True and c.dandelion is True and c.allow_private_peers is False
    assert (c.max_inbound, c.max_outbound) == (200, 8)
    assert c.network_pow == (1000, 1000) and (c.ntpb, c.extra) == (1000, 1000)
    assert c.log_level == "INFO" and c.streams == (1,) and c.user_agent == "/bmnode:0.1.0/"
    assert c.config_file == tmp_path / "bmnode.toml"
    assert c.inventory_path == tmp_path / "inventory.sqlite"
    assert c.knownnodes_path == tmp_path / "knownnodes.sqlite"
    assert c.to_dict()["network_pow"] == "1000:1000" and c.to_dict()["data_dir"] == str(tmp_path)


def test_default_data_dir_follows_xdg(tmp_path):
    assert default_data_dir({"XDG_DATA_HOME": "/srv/data", "HOME": "/home/u"}) == Path("/srv/data/bmnode")
    assert default_data_dir({"XDG_DATA_HOME": "relative/x", "HOME": "/home/u"}) == Path("/home/u/.local/share/bmnode")
    assert default_data_dir({"XDG_DATA_HOME": "", "HOME": "/home/u"}) == Path("/home/u/.local/share/bmnode")
    assert default_data_dir({"HOME": "/home/u"}) == Path("/home/u/.local/share/bmnode")


def test_no_data_dir_reads_the_default_one(tmp_path):
    d = tmp_path / "bmnode"
    d.mkdir()
    write(d, 'log_level = "debug"\n')
    c = load_config(None, env={"XDG_DATA_HOME": str(tmp_path)})
    assert c.data_dir == d and c.log_level == "DEBUG"


def test_config_is_frozen(tmp_path):
    c = load_config(tmp_path)
    with pytest.raises(FrozenInstanceError):
        c.max_outbound = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------- the file


def test_file_sets_every_option(tmp_path):
    write(
        tmp_path,
        """
listen = "127.0.0.1:0"
peers = ["127.0.0.1:9001", "[::1]:9002", "node.example.org:8444"]
bootstrap = false
max_inbound = 50
max_outbound = 4
network_pow = "10:10"
tls = false
log_level = "warning"
streams = [1, 2]
user_agent = "/test:1/"
dandelion = false
allow_private_peers = true
""",
    )
    c = load_config(tmp_path)
    assert c.listen == HostPort("127.0.0.1", 0)
    assert c.peers == (HostPort("127.0.0.1", 9001), HostPort("::1", 9002), HostPort("node.example.org", 8444))
    assert [str(p) for p in c.peers] == ["127.0.0.1:9001", "[::1]:9002", "node.example.org:8444"]
    assert (c.bootstrap, c.tls, c.dandelion, c.allow_private_peers) == (False, False, False, True)
    assert (c.max_inbound, c.max_outbound, c.network_pow) == (50, 4, (10, 10))
    assert (c.log_level, c.streams, c.user_agent) == ("WARNING", (1, 2), "/test:1/")


def test_flag_style_keys_and_aliases(tmp_path):
    write(tmp_path, 'no-bootstrap = true\nno_tls = true\nmax-outbound = 2\npeer = ["8.8.8.8:8444"]\nnetwork-pow = [5, 7]\n')
    c = load_config(tmp_path)
    assert (c.bootstrap, c.tls, c.max_outbound, c.network_pow) == (False, False, 2, (5, 7))
    assert c.peers == (HostPort("8.8.8.8", 8444),)


def test_consistent_repeats_are_fine_contradictions_are_not(tmp_path):
    write(tmp_path, "bootstrap = false\nno_bootstrap = true\n")
    assert load_config(tmp_path).bootstrap is False
    path = write(tmp_path, "tls = true\nno-tls = true\n")
    with pytest.raises(ConfigError, match="contradicts key 'tls'") as err:
        load_config(tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "text, key",
    [
        ("colour = 'blue'\n", "colour"),
        ("[network]\nlisten = '1.2.3.4:1'\n", "network"),
        ("api_port = 8442\n", "api_port"),
    ],
)
def test_unknown_keys(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="unknown key") as err:
        load_config(tmp_path)
    assert str(path) in str(err.value) and repr(key) in str(err.value)


def test_data_dir_cannot_be_set_in_the_file(tmp_path):
    write(tmp_path, 'data_dir = "/elsewhere"\n')
    with pytest.raises(ConfigError, match="--data-dir"):
        load_config(tmp_path)


def test_unparsable_files(tmp_path):
    path = write(tmp_path, "listen = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_config(tmp_path)
    assert str(path) in str(err.value)
    path.write_bytes(b'user_agent = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match=str(path)):
        load_config(tmp_path)
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path)


# ---------------------------------------------------------------------------- precedence


def test_cli_over_file_over_defaults(tmp_path):
    write(tmp_path, 'listen = "127.0.0.1:7000"\nmax_outbound = 3\npeers = ["1.2.3.4:1"]\nlog_level = "ERROR"\n')
    c = load_config(tmp_path, {"max_outbound": "5", "peers": ["5.6.7.8:2"], "log_level": None, "tls": False})
    assert c.max_outbound == 5  # flag beats file
    assert c.peers == (HostPort("5.6.7.8", 2),)  # --peer replaces the file's list
    assert c.listen == HostPort("127.0.0.1", 7000)  # file beats default
    assert c.log_level == "ERROR"  # None = flag not given
    assert c.tls is False and c.max_inbound == 200


def test_argparse_flags_end_to_end(tmp_path):
    write(tmp_path, 'max_inbound = 7\ntls = true\n')
    args = run_parser().parse_args(
        [
            "--data-dir", str(tmp_path),
            "--listen", "[::]:0",
            "--peer", "127.0.0.1:9001",
            "--peer", "127.0.0.1:9002",
            "--no-bootstrap",
            "--max-outbound", "2",
            "--network-pow", "10:10",
            "--no-tls",
            "--log-level", "debug",
            "--allow-private-peers",
            "--no-dandelion",
        ]
    )
    c = config_from_args(args)
    assert c.data_dir == tmp_path and c.listen == HostPort("::", 0)
    assert c.peers == (HostPort("127.0.0.1", 9001), HostPort("127.0.0.1", 9002))
    assert (c.bootstrap, c.tls, c.dandelion, c.allow_private_peers) == (False, False, False, True)
    assert (c.max_inbound, c.max_outbound, c.network_pow, c.log_level) == (7, 2, (10, 10), "DEBUG")


def test_argparse_without_flags_keeps_file_and_defaults(tmp_path):
    write(tmp_path, "no_tls = true\n")
    c = config_from_args(run_parser().parse_args(["--data-dir", str(tmp_path)]))
    assert c.tls is False and c.bootstrap is True and c.listen == HostPort("0.0.0.0", 8444)
    c = config_from_args(run_parser().parse_args([]), env={"XDG_DATA_HOME": str(tmp_path / "x")})
    assert c.data_dir == tmp_path / "x" / "bmnode"


def test_data_dir_relative_and_tilde(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_config("rel").data_dir == tmp_path / "rel"
    assert load_config("~/d").data_dir == tmp_path / "d"


def test_unknown_override_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        load_config(tmp_path, {"colour": "x"})


# ---------------------------------------------------------------------------- bad values

BAD_VALUES = [
    ("listen", "--listen", "nohost"),
    ("listen", "--listen", "1.2.3.4"),
    ("listen", "--listen", "::1:8444"),
    ("listen", "--listen", "[::1]8444"),
    ("listen", "--listen", "[zz::q]:1"),
    ("listen", "--listen", "[::1"),
    ("listen", "--listen", "host:70000"),
    ("listen", "--listen", "host:-1"),
    ("listen", "--listen", "host:"),
    ("listen", "--listen", ":8444"),
    ("listen", "--listen", "999.1.1.1:1"),
    ("listen", "--listen", "1.2.3:1"),
    ("listen", "--listen", "bad_host!:1"),
    ("listen", "--listen", "h:８４"),  # non-ASCII digits
    ("peers", "--peer", ["1.2.3.4:0"]),  # port 0 only for listen
    ("peers", "--peer", ["ok.example:1", "bad"]),
    ("max_outbound", "--max-outbound", "9"),
    ("max_outbound", "--max-outbound", "-1"),
    ("max_outbound", "--max-outbound", "x"),
    ("max_outbound", "--max-outbound", "2.5"),
    ("max_inbound", "--max-inbound", "100001"),
    ("max_inbound", "--max-inbound", ""),
    ("network_pow", "--network-pow", "0:10"),
    ("network_pow", "--network-pow", "10:0"),
    ("network_pow", "--network-pow", "10"),
    ("network_pow", "--network-pow", "a:b"),
    ("network_pow", "--network-pow", "10:10:10"),
    ("network_pow", "--network-pow", "-1:10"),
    ("network_pow", "--network-pow", f"{1 << 64}:1"),
    ("log_level", "--log-level", "LOUD"),
    ("log_level", "--log-level", ""),
]


@pytest.mark.parametrize("name, flag, value", BAD_VALUES)
def test_bad_flag_values_name_the_flag(tmp_path, name, flag, value):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, {name: value})
    assert str(err.value).startswith(f"{flag}: ")


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


FILE_ONLY_BAD = [
    ("max_outbound", True),  # a boolean is not a number
    ("max_outbound", 9),
    ("max_inbound", -5),
    ("network_pow", [1]),
    ("network_pow", [1, 2, 3]),
    ("network_pow", [1, "2"]),
    ("network_pow", 10),
    ("tls", "yes"),
    ("bootstrap", 1),
    ("dandelion", "false"),
    ("allow_private_peers", 0),
    ("streams", []),
    ("streams", [0]),
    ("streams", [1, 1]),
    ("streams", "1"),
    ("streams", [1, True]),
    ("streams", [1 << 63]),
    ("user_agent", ""),
    ("user_agent", "x" * 5001),
    ("user_agent", 5),
    ("peers", 5),
    ("peers", [5]),
    ("listen", 8444),
    ("log_level", 10),
]


@pytest.mark.parametrize("name, value", FILE_ONLY_BAD + [(n, v) for n, _, v in BAD_VALUES])
def test_bad_file_values_name_the_file_and_key(tmp_path, name, value):
    path = write(tmp_path, f"{name} = {_toml(value)}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(err.value).startswith(f"{path}: key {name!r}: ")


def test_direct_construction_is_checked_and_normalised(tmp_path):
    c = NodeConfig(data_dir=str(tmp_path), listen="127.0.0.1:0", peers=["[::1]:1"], network_pow="10:10", log_level="debug")
    assert c.data_dir == tmp_path and c.listen == HostPort("127.0.0.1", 0)
    assert c.peers == (HostPort("::1", 1),) and c.network_pow == (10, 10) and c.log_level == "DEBUG"
    assert NodeConfig(data_dir=tmp_path, listen=c.listen).listen == c.listen
    with pytest.raises(ConfigError, match=r"^NodeConfig\.max_outbound: "):
        NodeConfig(data_dir=tmp_path, max_outbound=20)
    with pytest.raises(ConfigError, match=r"^NodeConfig\.data_dir: "):
        NodeConfig(data_dir="")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- parsers


def test_parse_host_port_good_values():
    assert parse_host_port("127.0.0.1:8444") == HostPort("127.0.0.1", 8444)
    assert parse_host_port(" Example.ORG:1 ") == HostPort("example.org", 1)
    assert parse_host_port("[2001:DB8::1]:65535") == HostPort("2001:db8::1", 65535)
    assert parse_host_port("quzwelsuziwqgpt2.onion:8444").host == "quzwelsuziwqgpt2.onion"
    assert parse_host_port("0.0.0.0:0", allow_port_zero=True).port == 0
    with pytest.raises(ConfigError):
        parse_host_port("0.0.0.0:0")
    for hp in (HostPort("::1", 5), HostPort("1.2.3.4", 5), HostPort("a.b", 5)):
        assert parse_host_port(str(hp)) == hp


def test_parse_network_pow():
    assert parse_network_pow("1000:1000") == (1000, 1000)
    assert parse_network_pow(" 10:10 ") == (10, 10)
    with pytest.raises(ConfigError, match="^--network-pow: "):
        parse_network_pow("1000", where="--network-pow")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parsers_raise_only_config_error(text):
    for fn in (parse_host_port, parse_network_pow):
        try:
            fn(text)
        except ConfigError:
            pass


# ---------------------------------------------------------------------------- apinotifypath


def test_api_notify_path_from_file_flag_and_reference_key(tmp_path):
    assert load_config(tmp_path).api_notify_path is None
    write(tmp_path, 'api_notify_path = "/usr/local/bin/bm-notify"\n')
    assert load_config(tmp_path).api_notify_path == "/usr/local/bin/bm-notify"
    write(tmp_path, 'apinotifypath = "/opt/hook"\n')  # the reference's keys.dat name works too
    assert load_config(tmp_path).api_notify_path == "/opt/hook"
    write(tmp_path, 'apinotifypath = ""\n')  # empty means none, as in the reference
    assert load_config(tmp_path).api_notify_path is None
    args = run_parser().parse_args(["--data-dir", str(tmp_path), "--api-notify-path", "~/hook.sh"])
    assert config_from_args(args).api_notify_path == str(Path.home() / "hook.sh")


def test_api_notify_path_flag_is_documented():
    helptext = run_parser().format_help()
    assert "--api-notify-path" in helptext
    for event in ("startingUp", "newMessage", "newBroadcast"):
        assert event in helptext


@pytest.mark.parametrize("value", ["17", "['a']", '"a\\nb"', '"a\\u0000b"'])
def test_bad_api_notify_path_names_the_key(tmp_path, value):
    path = write(tmp_path, f"api_notify_path = {value}\n")
    with pytest.raises(ConfigError, match="api_notify_path") as err:
        load_config(tmp_path)
    assert str(path) in str(err.value)


def test_api_variant_json_and_the_reference_key(tmp_path):
    write(tmp_path, 'apivariant = "json"\n')  # the reference's keys.dat name
    assert load_config(tmp_path).api_variant == "json"
    write(tmp_path, 'api_variant = "JSON"\n')
    assert load_config(tmp_path).api_variant == "json"
    write(tmp_path, 'apivariant = "soap"\n')
    with pytest.raises(ConfigError, match="apivariant"):
        load_config(tmp_path)

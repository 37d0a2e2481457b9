"""
The settings table is the one declaration of every option: the command
line, the keywords of L{PreforkService}, the worker's configuration and the
documentation's options reference all come from it, and agree (the
reference is checked in C{tests/test_docs.py}).
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from preforktwist import PreforkService
from preforktwist.protocol.config import WorkerConfig
from preforktwist.settings import (
    BY_NAME,
    MIB,
    SETTINGS,
    Endpoints,
    Flag,
    SettingError,
    Settings,
    Side,
    workerConfig,
)
from preforktwist.tap import Options

#: What the master decides for each worker, beside the worker-side settings.
PER_WORKER = {
    "number",
    "masterPid",
    "families",
    "tls",
    "allowance",
    "standby",
    "reactor",
    "countsInterval",
    "loadSlot",
}


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def cliError(*args: str) -> str:
    with pytest.raises(SystemExit) as raised:
        parse(*args)
    text = str(raised.value.code)
    assert text.startswith("twistd preforked: ")
    return text.removeprefix("twistd preforked: ")


def keywordError(**keywords: Any) -> str:
    with pytest.raises(ValueError) as raised:
        PreforkService(reactor=MemoryReactorClock(), **keywords)
    assert isinstance(raised.value, SettingError)
    return str(raised.value)


def test_every_setting_has_a_flag() -> None:
    """
    Every field of L{Settings} is a setting, and C{Options} knows each
    setting's flag, with its one-letter synonym.
    """
    assert [s.name for s in SETTINGS] == [f.name for f in fields(Settings)]
    options = Options()
    for s in SETTINGS:
        assert s.flag in options, s.flag
        if s.short is not None:
            assert options.synonyms[s.short] == s.flag
    flags = {s.flag for s in SETTINGS}
    assert len(flags) == len(SETTINGS)
    assert set(options.docs) - {"help", "version", "l"} == flags


def test_defaults_agree() -> None:
    """
    Nothing given on the command line gives the same settings as nothing
    given as keywords, and the options show the declared defaults.
    """
    options = Options()
    for s in SETTINGS:
        if isinstance(s.kind, Flag):
            assert options[s.flag] == 0
        elif isinstance(s.kind, Endpoints):
            assert options[s.flag] == []
        else:
            assert options.defaults[s.flag] == s.optionDefault
    assert parse().settings == Settings()
    assert Settings().listen == ("tcp:8080",)
    # auto: each worker works its cap out from its open-file limit.
    assert Settings().maxConcurrent is None
    assert parse("-c", "auto").settings == Settings(maxConcurrent="auto")  # type: ignore[arg-type]
    assert parse("-c", "0").settings.maxConcurrent == 0
    assert Settings().firstByteTimeout == 0
    assert Settings().replaceAt == 0.9


def test_values_travel() -> None:
    """
    A value given on the command line is the keyword's value, in the
    keyword's unit; a negated flag turns its setting off.
    """
    settings = parse(
        "-l",
        "tcp:0",
        "--listen",
        "unix:/tmp/x.sock",
        "-c",
        "7",
        "--max-worker-memory",
        "1.5",
        "--no-fork-server",
        "--proxy-protocol",
        "-m",
        "3",
    ).settings
    assert settings == Settings(
        listen=("tcp:0", "unix:/tmp/x.sock"),
        maxConcurrent=7,
        maxWorkerMemory=int(1.5 * MIB),
        forkServer=False,
        proxyProtocol=True,
        maxConnectionsPerWorker=3,
    )
    assert settings.standby == 1


@pytest.mark.parametrize(
    ("args", "keywords", "message"),
    [
        (
            ["-w", "0"],
            {"workers": 0},
            "--workers: must be a whole number from 1 to 1024, not ",
        ),
        (
            ["--replace-at", "2"],
            {"replaceAt": 2},
            "--replace-at: must be a number from 0.01 to 1, not ",
        ),
        (
            ["--heartbeat-timeout", "0.5"],
            {"heartbeatTimeout": 0.5},
            "--heartbeat-timeout: must be 0 (off) or at least 1, not ",
        ),
        (
            ["--grace", "-1"],
            {"grace": -1},
            "--grace: must be a number of seconds from 0 to 86400, not ",
        ),
        (
            ["--max-worker-memory", "-1"],
            {"maxWorkerMemory": -1},
            "--max-worker-memory: must be a number of megabytes, 0 or more, not ",
        ),
        (
            ["-p", "a.B", "-f", "c.d"],
            {"protocol": "a.B", "factory": "c.d"},
            "--protocol: give one of --protocol and --factory, not both",
        ),
        (
            ["--min-workers", "2"],
            {"minWorkers": 2},
            "--min-workers: give --max-workers too",
        ),
        (
            ["--max-workers", "2"],
            {"maxWorkers": 2},
            "--max-workers: give --min-workers too",
        ),
        (
            ["--min-workers", "5", "--max-workers", "3"],
            {"minWorkers": 5, "maxWorkers": 3},
            "--min-workers: 5 is above --max-workers 3",
        ),
        (
            ["--listen", "nosuch:80"],
            {"listen": "nosuch:80"},
            "--listen: cannot parse endpoint 'nosuch:80'",
        ),
        (
            ["--listen", "tcp:80", "--backlog", "70000"],
            {"listen": "tcp:80", "backlog": 70000},
            "--backlog: must be a whole number from 1 to 65535, not ",
        ),
    ],
)
def test_one_message(args: list[str], keywords: dict[str, Any], message: str) -> None:
    """
    A bad value, or two settings that do not go together, give the same
    C{--option: reason} on the command line and as keywords.
    """
    fromCLI = cliError(*args)
    fromKeywords = keywordError(**keywords)
    assert fromCLI.startswith(message), fromCLI
    assert fromKeywords.startswith(message), fromKeywords


def test_keyword_types() -> None:
    """
    A keyword of the wrong type names the setting's flag too.
    """
    assert keywordError(workers=2.5).startswith("--workers: ")
    assert keywordError(workers=True).startswith("--workers: ")
    assert keywordError(protocol=3).startswith("--protocol: ")
    assert keywordError(proxyProtocol="yes").startswith("--proxy-protocol: ")
    assert keywordError(listen=[]).startswith("--listen: ")
    assert keywordError(grace="soon").startswith("--grace: ")


def test_settings_or_keywords() -> None:
    """
    C{PreforkService} takes its settings whole or one by one, and keeps them
    as C{settings}.
    """
    reactor = MemoryReactorClock()
    byKeywords = PreforkService(reactor=reactor, listen="tcp:0", workers=3)
    whole = PreforkService(reactor=reactor, settings=Settings(listen=("tcp:0",)))
    assert byKeywords.settings == Settings(listen=("tcp:0",), workers=3)
    assert byKeywords.pool.size == 3
    assert whole.settings.listen == ("tcp:0",)
    with pytest.raises(TypeError):
        PreforkService(reactor=reactor, settings=Settings(), workers=3)


def test_workers_rule() -> None:
    """
    The adaptive pool's bounds come together; C{workers} then defaults to
    the lower bound and starts within them.
    """
    assert Settings(minWorkers=2, maxWorkers=4).workers == 2
    assert Settings(minWorkers=2, maxWorkers=4, workers=9).workers == 4
    assert Settings(minWorkers=2, maxWorkers=4, workers=1).workers == 2
    assert parse("--min-workers", "3", "--max-workers", "5")["workers"] == 3


def test_derived_defaults() -> None:
    """
    C{standby} and C{maxWorkerAgeJitter} default from the other settings.
    """
    assert Settings().standby == 0
    assert Settings(maxWorkerAge=100).standby == 1
    assert Settings(maxWorkerMemory=MIB).standby == 1
    assert Settings(maxConnectionsPerWorker=10, standby=0).standby == 0
    assert Settings(maxWorkerAge=100).maxWorkerAgeJitter == 10
    assert Settings(maxWorkerAge=100, maxWorkerAgeJitter=0).maxWorkerAgeJitter == 0


def test_worker_config_gets_worker_settings() -> None:
    """
    A worker is told exactly the settings a worker needs, under their own
    names, and what the master decided for it; no field has a default of
    its own, and the configuration reads back equal from its JSON.
    """
    workerSide = {s.name for s in SETTINGS if s.side is not Side.MASTER}
    names = {f.name for f in fields(WorkerConfig)}
    assert names == workerSide | PER_WORKER
    assert not workerSide & PER_WORKER
    with pytest.raises(TypeError):
        WorkerConfig(number=1)  # type: ignore[call-arg]
    settings = Settings(
        listen=("tcp:0", "tcp6:0"),
        protocol="a.B",
        maxConcurrent=5,
        replaceAt=0.5,
        acceptBatch=3,
        grace=7,
        workerInit="c.d",
        proxyProtocol=True,
    )
    config = workerConfig(
        settings,
        number=4,
        masterPid=1,
        families=[2, 10],
        tls=[False, False],
        allowance=9,
        standby=True,
        reactor="twisted.internet.epollreactor",
        countsInterval=1.0,
        loadSlot=3,
    )
    for name in workerSide:
        wanted = getattr(settings, name)
        assert getattr(config, name) == (
            list(wanted) if isinstance(wanted, tuple) else wanted
        ), name
    assert config.allowance == 9 and config.number == 4
    assert WorkerConfig.fromJSON(config.toJSON()) == config
    assert set(json.loads(config.toJSON())) == names


def test_service_builds_worker_config() -> None:
    """
    The service's own worker configuration carries its settings, and the
    allowance is C{-m} plus at most the jitter.
    """
    service = PreforkService(
        reactor=MemoryReactorClock(),
        listen="tcp:0",
        maxConcurrent=12,
        maxConnectionsPerWorker=10,
        maxConnectionsJitter=5,
    )
    allowances = {service._allowance() for _ in range(200)}
    assert allowances <= set(range(10, 16)) and len(allowances) > 1
    assert BY_NAME["maxConnectionsJitter"].side is Side.MASTER

"""An autouse fixture for the framework tests: nothing in the test process may reach beyond loopback.

Frameworks download things at run time on some paths (tiktoken's encodings, nltk's data) and may
send telemetry. Here every name lookup and connection to anything but loopback is refused and
recorded, and a test that tried one fails, even when the library swallowed the error. tiktoken
gets an empty cache folder, so that an encoding cached on this machine cannot hide a download
that a fresh machine would make.
"""

import ipaddress
import socket

import pytest

LOCAL_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def _is_loopback(host):
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch, tmp_path):
    attempts = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def refuse(what, host):
        attempts.append(f"{what} {host}")
        raise OSError(f"the framework tests reach nothing beyond loopback ({what} {host})")

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            refuse("lookup", host)
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            refuse("connect", address[0])
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            refuse("connect", address[0])
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    # Tracing is off unless asked for; make sure no environment asks for it.
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
        monkeypatch.setenv(name, "false")
    yield
    assert attempts == [], f"a test tried to reach beyond loopback: {attempts}"

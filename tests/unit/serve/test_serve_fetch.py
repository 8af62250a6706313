"""``pipeline.serve.fetch``: which task URLs are fetched (no SSRF), with real loopback HTTP and a
moto S3 server; the API key goes to Label Studio's origin only."""

from __future__ import annotations

import ipaddress
import socket

import boto3
import pytest

from pipeline.serve.fetch import FetchError, ImageFetcher, RefusedUrl, UrlPolicy


def _fetcher(hosts: str | None, buckets: str | None = None, ls_url: str | None = None, **kw):
    policy = UrlPolicy.from_flags(hosts, buckets, ls_url)
    return ImageFetcher(policy, max_bytes=kw.pop("max_bytes", 10**7), timeout_s=5.0, **kw)


def _resolve_to(monkeypatch: pytest.MonkeyPatch, name: str, address: str) -> None:
    """Make ``name`` resolve to ``address`` (the DNS answer an attacker would control)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == name:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_loopback_needs_an_explicit_entry(image_server) -> None:
    url, _ = image_server
    with pytest.raises(RefusedUrl, match="host '127.0.0.1' is not in --allowed-hosts"):
        _fetcher("example.com").fetch(url + "voc_0.png")
    assert _fetcher("127.0.0.1").fetch(url + "voc_0.png")[:4] == b"\x89PNG"
    local = url.replace("127.0.0.1", "localhost")
    assert _fetcher("localhost").fetch(local + "voc_0.png")[:4] == b"\x89PNG"
    assert _fetcher("127.0.0.0/8").fetch(url + "voc_0.png")[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "0.0.0.0", "fd00:ec2::254"],
)
def test_listed_name_resolving_to_special_addresses_is_refused(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    _resolve_to(monkeypatch, "images.example.com", address)
    with pytest.raises(RefusedUrl, match="resolves to"):
        _fetcher("*.example.com").fetch("http://images.example.com/a.png")


def test_address_rules() -> None:
    policy = UrlPolicy.from_flags("ls.internal,10.1.0.0/16", None, None)
    allowed = {
        a: policy.address_allowed(ipaddress.ip_address(a))
        for a in (
            "10.0.0.5",
            "10.1.2.3",
            "93.184.216.34",
            "127.0.0.1",
            "169.254.169.254",
            "100.100.100.200",
        )
    }
    assert allowed == {
        "10.0.0.5": True,  # private: in-cluster services of listed names
        "10.1.2.3": True,
        "93.184.216.34": True,
        "127.0.0.1": False,
        "169.254.169.254": False,
        "100.100.100.200": False,
    }
    metadata = UrlPolicy.from_flags("169.254.169.254", None, None)
    assert metadata.address_allowed(ipaddress.ip_address("169.254.169.254"))
    assert policy.name_allowed("LS.internal.") and not policy.name_allowed("evil.ls.internal")
    wildcard = UrlPolicy.from_flags("*.example.com", None, None)
    assert wildcard.name_allowed("a.b.example.com") and not wildcard.name_allowed("example.com")
    assert not wildcard.name_allowed("badexample.com")
    with pytest.raises(ValueError, match="--allowed-hosts 'a,,b': empty entry"):
        UrlPolicy.from_flags("a,,b", None, None)


def test_redirects_are_checked_again(image_server) -> None:
    url, _ = image_server
    with pytest.raises(RefusedUrl, match="169.254.169.254"):
        _fetcher("127.0.0.1").fetch(url + "moved.png")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("file:///etc/passwd", "scheme 'file' refused"),
        ("ftp://127.0.0.1/x.png", "scheme 'ftp' refused"),
        ("gopher://127.0.0.1:6379/_INFO", "scheme 'gopher' refused"),
        ("data:image/png;base64,AAAA", "scheme 'data' refused"),
        ("//127.0.0.1/x.png", "LABEL_STUDIO_URL"),
        ("/data/upload/1/x.png", "LABEL_STUDIO_URL"),
        ("", "no image URL"),
    ],
)
def test_other_schemes_and_relative_paths(url: str, match: str) -> None:
    with pytest.raises(FetchError, match=match):
        _fetcher("127.0.0.1").fetch(url)


def test_size_limit_and_http_errors(image_server) -> None:
    url, _ = image_server
    with pytest.raises(FetchError, match="exceeds --max-image-bytes 100"):
        _fetcher("127.0.0.1", max_bytes=100).fetch(url + "voc_0.png")
    with pytest.raises(FetchError, match="HTTP 404"):
        _fetcher("127.0.0.1").fetch(url + "nothing-here.png")


def test_api_key_goes_to_label_studio_only(image_server, monkeypatch) -> None:
    url, seen = image_server
    ls_url = url.rstrip("/")
    other = url.replace("127.0.0.1", "localhost")
    fetcher = _fetcher("localhost", ls_url=ls_url, api_key="legacy-key-123")
    seen.clear()
    assert fetcher.fetch("/voc_0.png")[:4] == b"\x89PNG"  # joined to LABEL_STUDIO_URL
    fetcher.fetch(other + "voc_0.png")  # another allowed host: no key
    assert seen == [("/voc_0.png", "Token legacy-key-123"), ("/voc_0.png", None)]


def test_buckets_must_be_listed(moto_s3: str, photos) -> None:
    client = boto3.client("s3", endpoint_url=moto_s3)
    client.create_bucket(Bucket="frames")
    client.put_object(Bucket="frames", Key="a/voc_0.png", Body=(photos / "voc_0.png").read_bytes())
    assert _fetcher(None, "frames").fetch("s3://frames/a/voc_0.png")[:4] == b"\x89PNG"
    with pytest.raises(RefusedUrl, match="bucket 'frames' is not in --allowed-buckets"):
        _fetcher(None, "other").fetch("s3://frames/a/voc_0.png")
    with pytest.raises(FetchError, match="exceeds --max-image-bytes"):
        _fetcher(None, "*", max_bytes=10).fetch("s3://frames/a/voc_0.png")

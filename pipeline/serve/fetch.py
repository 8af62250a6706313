"""Task image URLs -> bytes, allow-listed: no server-side request forgery through task data.

Accepted sources:

- ``http(s)://host/...`` when ``host`` is allowed (``--allowed-hosts``; default the host of
  ``LABEL_STUDIO_URL``). Every address the host resolves to is checked and the connection goes to
  a checked address (no DNS-rebinding window). Loopback, link-local (cloud metadata),
  unspecified, multicast and reserved addresses are refused unless an IP or CIDR entry of the
  allow-list (or ``localhost`` for loopback) names them; private (RFC 1918) addresses are fine
  for listed host names (in-cluster services). Redirects are followed (3 at most), each hop
  checked again.
- ``/data/...`` paths (Label Studio uploads, local files, storage proxies), joined to
  ``LABEL_STUDIO_URL``.
- ``s3://`` and ``gs://`` objects of ``--allowed-buckets``, read with the standard
  ``AWS_*`` / Google credentials of the environment (``pipeline.storage``).

The Label Studio API key (``LABEL_STUDIO_API_KEY``) is sent only to ``LABEL_STUDIO_URL``'s
origin: a personal access token (JWT refresh token) is exchanged for short-lived access tokens
(``Authorization: Bearer``), a legacy key is sent as ``Authorization: Token``.
"""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3

from pipeline import storage

HTTP_SCHEMES = ("http", "https")
BUCKET_SCHEMES = ("s3", "gs")
MAX_REDIRECTS = 3
ACCESS_TOKEN_MARGIN_S = 30.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Cloud instance-metadata endpoints outside the link-local range (AWS IPv6, Alibaba).
METADATA_ADDRESSES = frozenset(map(ipaddress.ip_address, ("fd00:ec2::254", "100.100.100.200")))


class FetchError(ValueError):
    """The image cannot be fetched; the message says why (it becomes the task's error entry)."""


class RefusedUrl(FetchError):
    """The URL is outside the allowed schemes, hosts, buckets or addresses."""


@dataclass(frozen=True)
class UrlPolicy:
    """What task URLs may reach.

    Attributes:
        names: allowed host names, lower case; ``*.example.com`` matches its subdomains.
        networks: IP / CIDR entries; addresses inside them are allowed whatever their kind.
        loopback_name: ``localhost`` was listed (its loopback addresses are allowed).
        buckets: allowed object-store buckets; ``*`` = any.
        label_studio_url: base of ``/data/...`` paths and the only origin that gets the API key.
    """

    names: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()
    loopback_name: bool = False
    buckets: tuple[str, ...] = ()
    label_studio_url: str | None = None

    @classmethod
    def from_flags(
        cls, hosts: str | None, buckets: str | None, label_studio_url: str | None
    ) -> UrlPolicy:
        """Build from ``--allowed-hosts`` / ``--allowed-buckets``; the host of
        ``label_studio_url`` is always allowed (the operator configured it).

        Raises:
            ValueError: an empty entry or a bad CIDR (message names the flag).
        """
        entries = _split(hosts, "--allowed-hosts")
        if label_studio_url:
            base = urlsplit(label_studio_url)
            if base.scheme not in HTTP_SCHEMES or not base.hostname:
                raise ValueError(f"LABEL_STUDIO_URL {label_studio_url!r}: expected http(s)://host.")
            entries.append(base.hostname.lower())
        names, networks = [], []
        for entry in entries:
            network = _network(entry)
            if network is None:
                names.append(entry.lower().rstrip("."))
            else:
                networks.append(network)
        return cls(
            names=tuple(names),
            networks=tuple(networks),
            loopback_name="localhost" in names,
            buckets=tuple(_split(buckets, "--allowed-buckets")),
            label_studio_url=label_studio_url.rstrip("/") + "/" if label_studio_url else None,
        )

    def name_allowed(self, host: str) -> bool:
        """Whether ``host`` (a name or an IP literal) is on the list."""
        host = host.lower().rstrip(".")
        if any(_name_matches(host, pattern) for pattern in self.names):
            return True
        address = _address(host)
        return address is not None and any(address in n for n in self.networks)

    def address_allowed(self, address: IPAddress) -> bool:
        """Global and private addresses pass; special ones only when listed explicitly."""
        address = getattr(address, "ipv4_mapped", None) or address
        if any(address in n for n in self.networks):
            return True
        if address.is_loopback:
            return self.loopback_name
        special = (
            address in METADATA_ADDRESSES,
            address.is_link_local,
            address.is_unspecified,
            address.is_multicast,
            address.is_reserved,
        )
        return not any(special)

    def bucket_allowed(self, bucket: str) -> bool:
        """Whether objects of ``bucket`` may be read."""
        return "*" in self.buckets or bucket in self.buckets


def _split(text: str | None, flag: str) -> list[str]:
    if not text:
        return []
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise ValueError(f"{flag} {text!r}: empty entry (stray comma?).")
    return parts


def _network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        if "/" in entry:
            raise ValueError(f"--allowed-hosts {entry!r}: not a valid CIDR.") from None
        return None


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _name_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and fnmatch.fnmatchcase(host, pattern)
    return host == pattern


def resolve_checked(host: str, port: int, policy: UrlPolicy) -> list[str]:
    """The resolved addresses of ``host``, each checked.

    Raises:
        RefusedUrl: any resolved address is not allowed. FetchError: the name does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FetchError(f"cannot resolve {host}: {e}") from e
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    refused = [str(a) for a in addresses if not policy.address_allowed(a)]
    if refused or not addresses:
        raise RefusedUrl(
            f"{host} resolves to {', '.join(refused) or 'nothing'}: loopback, link-local and "
            "metadata addresses need an explicit --allowed-hosts entry (an IP or CIDR)."
        )
    return list(dict.fromkeys(str(a) for a in addresses))


class LabelStudioAuth:
    """The ``Authorization`` header for Label Studio, from ``LABEL_STUDIO_API_KEY``.

    A personal access token (a JWT) is exchanged at ``/api/token/refresh/`` for an access
    token, renewed shortly before it expires; any other key is a legacy ``Token``.
    """

    def __init__(self, base_url: str, key: str, http: urllib3.PoolManager) -> None:
        self.base_url, self.key, self.http = base_url, key, http
        self._lock = threading.Lock()
        self._access: tuple[str, float] | None = None

    def header(self) -> str:
        """``Token <key>`` or ``Bearer <access token>``.

        Raises:
            FetchError: the token exchange failed.
        """
        if _jwt_expiry(self.key) is None:
            return f"Token {self.key}"
        with self._lock:
            if self._access is None or self._access[1] - ACCESS_TOKEN_MARGIN_S < time.time():
                self._access = self._refresh()
            return f"Bearer {self._access[0]}"

    def _refresh(self) -> tuple[str, float]:
        url = urljoin(self.base_url, "api/token/refresh/")
        response = self.http.request(
            "POST", url, json={"refresh": self.key}, redirect=False, timeout=10.0
        )
        if response.status != 200:
            raise FetchError(f"Label Studio token refresh failed (HTTP {response.status}).")
        access = json.loads(response.data)["access"]
        return access, _jwt_expiry(access) or time.time() + 60.0


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unverified: only used to schedule renewal), else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return float(payload["exp"])
    except (ValueError, KeyError, TypeError):
        return None


class ImageFetcher:
    """Fetch task images under a :class:`UrlPolicy` (thread-safe).

    Args:
        policy: what URLs may reach.
        max_bytes: larger bodies are refused.
        timeout_s: connect and read timeout of each request.
        api_key: the Label Studio API key (None: no ``Authorization`` header).
    """

    def __init__(
        self, policy: UrlPolicy, max_bytes: int, timeout_s: float, api_key: str | None = None
    ) -> None:
        self.policy, self.max_bytes, self.timeout_s = policy, max_bytes, timeout_s
        self._tls = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
        base = policy.label_studio_url
        self.auth = LabelStudioAuth(base, api_key, self._tls) if base and api_key else None

    @classmethod
    def from_env(cls, hosts: str | None, buckets: str | None, **kwargs) -> ImageFetcher:
        """Policy and key from flags plus ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``."""
        base = os.environ.get("LABEL_STUDIO_URL") or None
        policy = UrlPolicy.from_flags(hosts, buckets, base)
        return cls(policy, api_key=os.environ.get("LABEL_STUDIO_API_KEY") or None, **kwargs)

    def fetch(self, url: str) -> bytes:
        """The bytes at ``url``.

        Raises:
            RefusedUrl: outside the policy. FetchError: any other failure (HTTP status,
            too large, unreachable).
        """
        if not isinstance(url, str) or not url:
            raise FetchError("no image URL in the task data")
        if url.startswith("/"):
            if not self.policy.label_studio_url:
                raise FetchError(f"{url}: a Label Studio path needs LABEL_STUDIO_URL to be set")
            url = urljoin(self.policy.label_studio_url, url.lstrip("/"))
        scheme = urlsplit(url).scheme.lower()
        if scheme in BUCKET_SCHEMES:
            return self._read_object(url)
        if scheme not in HTTP_SCHEMES:
            raise RefusedUrl(f"scheme {scheme or '(none)'!r} refused; use http(s), s3 or gs URLs")
        return self._get(url)

    def _read_object(self, uri: str) -> bytes:
        bucket = urlsplit(uri).netloc
        if not self.policy.bucket_allowed(bucket):
            raise RefusedUrl(f"bucket {bucket!r} is not in --allowed-buckets")
        fs, path = storage.filesystem_for(uri)
        try:
            size = fs.get_file_info(path).size
            if size is not None and size > self.max_bytes:
                raise FetchError(f"{size} bytes exceeds --max-image-bytes {self.max_bytes}")
            return storage.read_bytes(uri)
        except OSError as e:
            raise FetchError(f"cannot read {storage.split_uri(uri)[0]}://{bucket}/...: {e}") from e

    def _get(self, url: str) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(url)
            try:
                if response.status in (301, 302, 303, 307, 308):
                    url = urljoin(url, response.headers.get("Location", ""))
                    continue
                if response.status != 200:
                    raise FetchError(f"HTTP {response.status} from {_origin(url)}")
                return self._read_limited(response)
            finally:
                response.release_conn()
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")

    def _request(self, url: str) -> urllib3.BaseHTTPResponse:
        parts = urlsplit(url)
        if parts.scheme not in HTTP_SCHEMES or not parts.hostname:
            raise RefusedUrl(f"{_origin(url)}: only http(s) URLs with a host are fetched")
        if not self.policy.name_allowed(parts.hostname):
            raise RefusedUrl(f"host {parts.hostname!r} is not in --allowed-hosts")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = resolve_checked(parts.hostname, port, self.policy)
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
        if self.auth is not None and _origin(url) == _origin(self.auth.base_url):
            headers["Authorization"] = self.auth.header()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for i, address in enumerate(addresses):  # e.g. localhost: ::1, then 127.0.0.1
            pool = self._pool(parts.scheme, parts.hostname, address, port)
            try:
                return pool.urlopen(
                    "GET",
                    target,
                    headers=headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    timeout=urllib3.Timeout(self.timeout_s),
                )
            except urllib3.exceptions.NewConnectionError as e:
                if i + 1 == len(addresses):
                    raise FetchError(f"{_origin(url)} unreachable: {type(e).__name__}") from e
            except urllib3.exceptions.HTTPError as e:
                raise FetchError(f"{_origin(url)} unreachable: {type(e).__name__}") from e
        raise FetchError(f"{_origin(url)}: no address")

    def _pool(self, scheme: str, host: str, address: str, port: int) -> urllib3.HTTPConnectionPool:
        """A pool connected to the checked ``address``; TLS still verifies ``host``."""
        if scheme == "http":
            return urllib3.HTTPConnectionPool(address, port, maxsize=1)
        return urllib3.HTTPSConnectionPool(
            address,
            port,
            maxsize=1,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )

    def _read_limited(self, response: urllib3.BaseHTTPResponse) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(f"{declared} bytes exceeds --max-image-bytes {self.max_bytes}")
        data = response.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise FetchError(f"more than --max-image-bytes {self.max_bytes} bytes")
        return data


def _origin(url: str) -> str:
    """``scheme://host:port`` without userinfo, path or query (safe to log)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"

"""``--health-check``: ask ``/healthz`` of the exporter that a config and web config file describe,
as a container's ``HEALTHCHECK`` does, and say 0 (a 200) or 1 (anything else).

The address is the config's ``web.listen_address`` (or ``--web.listen-address``; without a config
file, as in ``--demo``, the default), a wildcard host asked on loopback. Only the config's ``web``
section is read, so targets and their secrets play no part: a file broken by an edit that the
running exporter refused on reload does not make it unhealthy.

With ``tls_server_config`` the check speaks TLS and trusts exactly the certificate that
``cert_file`` holds: on loopback the certificate's names cannot match and its CA may be unknown to
this host, but the exporter must present that very certificate. It sends no credentials
(``/healthz`` needs none); when the web config requires client certificates it presents the
server's own certificate and key.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys

from pydantic import ValidationError

from exporter.bounded import (
    CONFIG_FILE_MAX_BYTES,
    FileProblem,
    YAMLProblem,
    load_yaml,
    read_text,
)
from exporter.config import (
    ConfigError,
    WebConfig,
    expand_env,
    parse_listen_address,
    validation_problems,
    yaml_problem,
)
from exporter.web.webconfig import (
    PemError,
    TLSServerConfig,
    in_memory_file,
    load_web_config,
    pem_of,
)

PATH = "/healthz"
TIMEOUT = 4.0
"""Seconds to connect, and to wait for each answer: below the HEALTHCHECK --timeout (5 s)."""
LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104
REQUIRED_CLIENT_CERT = {"RequireAnyClientCert", "RequireAndVerifyClientCert"}


class HealthCheckError(Exception):
    """Why the check could not be made or did not pass."""


def web_section(path: str, environ: dict[str, str]) -> WebConfig:
    """The ``web`` section of the config file at ``path``, read as the exporter reads it (bounded,
    ``${VAR}``s expanded); its defaults when there is no such file (``--demo`` reads none)."""
    if not os.path.lexists(path):
        return WebConfig()
    try:
        raw = load_yaml(read_text(path, CONFIG_FILE_MAX_BYTES), max_chars=CONFIG_FILE_MAX_BYTES)
    except FileProblem as exc:
        raise HealthCheckError(f"{path}: the file {exc}") from None
    except YAMLProblem as exc:
        raise HealthCheckError(str(ConfigError([yaml_problem(exc)], path))) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise HealthCheckError(f"{path}: the file must be a YAML mapping")
    section, problems = expand_env({"web": raw.get("web") or {}}, environ)
    if problems:
        raise HealthCheckError(str(ConfigError(problems, path)))
    try:
        return WebConfig.model_validate(section["web"])
    except ValidationError as exc:
        found = list(validation_problems(exc, ("web",)))
        raise HealthCheckError(str(ConfigError(found, path))) from None


def _pem(tls: TLSServerConfig, file_key: str, inline: str) -> bytes:
    try:
        return pem_of(getattr(tls, file_key), inline)
    except PemError as exc:
        raise HealthCheckError(f"tls_server_config.{file_key}: {exc}") from None


def client_context(tls: TLSServerConfig) -> tuple[ssl.SSLContext, bytes]:
    """A client context for the exporter's own TLS, and the DER of the certificate it must
    present (the first one in ``cert_file`` or ``cert``)."""
    try:
        pem = _pem(tls, "cert_file", tls.cert).decode("ascii")
        begin = pem.index("-----BEGIN CERTIFICATE-----")
        end = pem.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
        expected = ssl.PEM_cert_to_DER_cert(pem[begin:end])
    except (UnicodeDecodeError, ValueError) as exc:
        raise HealthCheckError(
            f"tls_server_config.cert_file: cannot read a certificate ({type(exc).__name__})"
        ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the certificate names the host, not 127.0.0.1
    context.verify_mode = ssl.CERT_NONE  # checked below against the certificate instead
    if tls.client_auth_type in REQUIRED_CLIENT_CERT:
        key = _pem(tls, "key_file", tls.key.get_secret_value())
        with in_memory_file(pem.encode()) as cert_path, in_memory_file(key) as key_path:
            try:
                context.load_cert_chain(cert_path, key_path)
            except OSError as exc:  # ssl.SSLError included
                raise HealthCheckError(
                    f"tls_server_config.key_file: cannot load ({type(exc).__name__})"
                ) from None
    return context, expected


def check(
    config_path: str,
    listen: str | None,
    web_config_path: str | None,
    environ: dict[str, str],
    timeout: float = TIMEOUT,
) -> str:
    """GET /healthz of the described exporter; its URL when it answered 200, else
    :class:`HealthCheckError`."""
    web = web_section(config_path, environ)
    tls = None
    if web_config_path:
        try:
            # Only its settings: the client reads the certificate, never the key.
            tls = load_web_config(web_config_path, with_tls=False).tls
        except ConfigError as exc:
            raise HealthCheckError(str(exc)) from None
    try:
        host, port = parse_listen_address(listen or web.listen_address)
    except ValueError as exc:
        raise HealthCheckError(f"--listen: {exc}") from None
    if port == 0:
        raise HealthCheckError("the listen address has port 0: the port is chosen at start")
    host = LOOPBACK.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    connection: http.client.HTTPConnection
    if tls is None:
        url = f"http://{shown}:{port}{PATH}"
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        url = f"https://{shown}:{port}{PATH}"
        context, expected = client_context(tls)
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        connection.connect()
        if tls is not None:
            sock = connection.sock
            if not isinstance(sock, ssl.SSLSocket) or sock.getpeercert(True) != expected:
                raise HealthCheckError(
                    f"GET {url}: the server's certificate is not the one in "
                    f"{tls.cert_file or 'cert'} (another server on the port, or a renewed "
                    "certificate not yet loaded)"
                )
        connection.request("GET", PATH, headers={"User-Agent": "messaging-stats-exporter"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        raise HealthCheckError(f"GET {url}: {exc}") from None
    finally:
        connection.close()
    if status != 200:
        raise HealthCheckError(f"GET {url}: HTTP {status}")
    return url


def main(config_path: str, listen: str | None, web_config_path: str | None) -> int:
    """0 when /healthz answered 200, else 1 with the reason on stderr (never 2: Docker reserves
    it in a HEALTHCHECK)."""
    try:
        url = check(config_path, listen, web_config_path, dict(os.environ))
    except HealthCheckError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"healthy: GET {url}: HTTP 200")
    return 0

"""The one module that talks to the Kubernetes API (besides kopf's own watching and patching).

Owns an async HTTP client built from kopf's login (`kopf.ConnectionInfo`: the service account,
a kubeconfig, or an explicit URL for tests), idempotent create/delete (already-exists and
not-found count as success), and `KubeReplicaBackend`, the Kubernetes implementation of
`controller.ReplicaBackend`. On a 401 the credentials are fetched again once (rotating tokens).
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from typing import Any

import httpx
import kopf
from crescendo_spec.model import JobSpec

from crescendo_operator import builders
from crescendo_operator.scaling import Replica

logger = logging.getLogger(__name__)

ALREADY_EXISTS = 409
NOT_FOUND = 404
UNAUTHORIZED = 401
PLURALS = {"Pod": "pods", "Service": "services"}
USER_AGENT = f"crescendo-operator/{version('crescendo')}"


class KubeError(RuntimeError):
    """The API server refused a request (other than the idempotent 404/409 cases)."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {body[:300]}")
        self.status = status


def _pem_file(data: str | bytes) -> str:
    """ssl wants client certificates as files; kubeconfigs may embed them."""
    handle = tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False)  # noqa: SIM115
    with handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return handle.name


def _client(info: kopf.ConnectionInfo, timeout: float) -> httpx.AsyncClient:
    verify: ssl.SSLContext | bool = False
    if not info.insecure:
        ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        context = ssl.create_default_context(
            cafile=str(info.ca_path) if info.ca_path else None, cadata=ca_data
        )
        cert = info.certificate_path or (
            _pem_file(info.certificate_data) if info.certificate_data else None
        )
        key = info.private_key_path or (
            _pem_file(info.private_key_data) if info.private_key_data else None
        )
        if cert:
            context.load_cert_chain(str(cert), str(key) if key else None)
        verify = context
    # Named in the API server's audit log (kopf's own requests say `kopf/<version>`).
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if info.token:
        headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
    auth = (info.username, info.password or "") if info.username else None
    return httpx.AsyncClient(
        base_url=info.server.rstrip("/"),
        verify=verify,
        headers=headers,
        auth=auth,
        timeout=timeout,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        trust_env=info.trust_env,
    )


class KubeApi:
    """Idempotent pod/service calls against the API server."""

    def __init__(
        self, login: Callable[[], kopf.ConnectionInfo | None], timeout: float = 10.0
    ) -> None:
        self._login = login
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None

    def _connect(self) -> httpx.AsyncClient:
        info = self._login()
        if info is None:
            raise kopf.TemporaryError("no Kubernetes credentials yet", delay=5)
        return _client(info, self._timeout)

    async def _request(self, method: str, url: str, body: Any = None) -> httpx.Response:
        for attempt in (1, 2):
            if self._http is None:
                self._http = self._connect()
            response = await self._http.request(method, url, json=body)
            if response.status_code == UNAUTHORIZED and attempt == 1:
                await self._http.aclose()
                self._http = None  # log in again: the token may have rotated
                continue
            return response
        raise AssertionError("unreachable")

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create a Pod or Service; False (no error) if it already exists."""
        namespace = manifest["metadata"]["namespace"]
        url = f"/api/v1/namespaces/{namespace}/{PLURALS[manifest['kind']]}"
        response = await self._request("POST", url, dict(manifest))
        if response.status_code == ALREADY_EXISTS:
            return False
        if response.is_error:
            raise KubeError("POST", url, response.status_code, response.text)
        return True

    async def delete_pod(self, namespace: str, name: str) -> bool:
        """Delete a Pod (graceful: the trainer checkpoints on SIGTERM); False if already gone."""
        url = f"/api/v1/namespaces/{namespace}/pods/{name}"
        response = await self._request("DELETE", url)
        if response.status_code == NOT_FOUND:
            return False
        if response.is_error:
            raise KubeError("DELETE", url, response.status_code, response.text)
        return True

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


class KubeReplicaBackend:
    """Worker Pods of one AdaptiveBatchJob as replicas (`controller.ReplicaBackend`).

    The pods are observed through the operator's watch (a kopf index) rather than listed on every
    tick: a reconcile of 1,000 jobs then costs no API reads.
    """

    def __init__(
        self,
        api: KubeApi,
        job_name: str,
        namespace: str,
        spec: JobSpec,
        owner_uid: str,
        observed: Sequence[Replica],
    ) -> None:
        self._api = api
        self._job = job_name
        self._namespace = namespace
        self._spec = spec
        self._uid = owner_uid
        self._observed = list(observed)

    async def ensure_service(self) -> bool:
        service = builders.headless_service(self._job, self._namespace, self._spec, self._uid)
        return await self._api.create(service)

    async def create_replica(self, index: int) -> None:
        pod = builders.worker_pod(self._job, self._namespace, index, self._spec, self._uid)
        if await self._api.create(pod):
            logger.info("created %s/%s", self._namespace, pod["metadata"]["name"])

    async def delete_replica(self, index: int) -> None:
        name = builders.worker_name(self._job, index)
        if await self._api.delete_pod(self._namespace, name):
            logger.info("deleted %s/%s", self._namespace, name)

    async def list_replicas(self) -> list[Replica]:
        return sorted(self._observed, key=lambda r: r.index)

"""A kmock 0.8 KubernetesEmulator that kopf 1.45 can run against, plus a tiny kubelet.

Stock kmock 0.8 misses what kopf relies on (seen on this machine, see MACHINE-NOTES.md). This
subclass closes exactly those gaps, in the emulator and not by weakening the operator:

0. `/api/v1/namespaces[/<name>]` is parsed as the cluster-scoped resource `namespaces` (kmock's
   path parser takes "namespaces" for the namespace prefix and fails: a 500 on every call);
1. objects get a name from generateName (kopf's Events), uid, resourceVersion (bumped on every
   write), generation (bumped on spec changes) and creationTimestamp — kopf's first finalizer
   JSON-patch needs them;
2. a JSON-patch `test` failure answers 422 (a conflict kopf retries), not 500;
3. lists carry kind/apiVersion; `/api/v1` reports groupVersion "v1", not "/v1";
4. a watch subscribes to the event bus *before* it sends its snapshot, under the same lock
   the writers hold, so no event between the two is lost; a watch from a list's
   resourceVersion does not replay the objects the list already returned (kmock sends them
   again as ADDED, and kopf then retries a stale finalizer patch and stalls until the next
   change); deletions between a list and its watch are not replayed;
5. `labelSelector` on lists and watches (equality, inequality, existence);
6. owner-reference garbage collection: deleting an owner deletes its dependents;
7. a kubelet stand-in: new pods become Running and Ready on 127.0.0.1 (so the operator's direct
   scrape reaches a test exporter) until `node_capacity` pods are placed; the rest stay Pending
   and unscheduled, as on a cluster without free GPUs.

Still absent (not needed by the operator): schema validation, PUT, server-side apply, strategic
merge (every dict patch is a JSON merge patch), the scale subresource.
"""

from __future__ import annotations

import datetime
import itertools
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import enums, parsing, rendering

CORE_PODS = kmock.resource("", "v1", "pods")
_parse_path = parsing.parse_path


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:  # not .../<ns>/<plural>
        name = parts[3] if len(parts) > 3 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
    return _parse_path(path)


# Gap 0 lives in a module function that kmock's Request parser calls; there is no hook for it.
parsing.parse_path = _parse_path_with_namespaces


def _object_key(request: rendering.Request) -> kmock.ObjectKey | None:
    """The object a request addresses; None for a collection (a list, a watch, a create)."""
    if request.resource is None or request.name is None:
        return None
    return (request.resource, request.namespace, request.name)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Kubernetes' set-less label selector syntax: `a=b,c!=d,e,!f`."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    node_capacity: int | None = None  # pods the kubelet places; None: unlimited
    pod_ip: str = "127.0.0.1"
    pods_created: int = 0  # successful pod creations (a refused duplicate is not counted)
    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    # --- 1. metadata stamping, 6. garbage collection, 7. kubelet ---------------------------------
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and isinstance(request.data, dict | list):
            self._stamp(request)
        key = _object_key(request)
        alive = key is not None and key in self.objects and not self.objects[key].deleted
        response = await super()._handle(request)
        if request.action == enums.action.CREATE and request.resource == CORE_PODS:
            self.pods_created += 1  # a duplicate raised 409 inside super()._handle
        # deleted now (DELETE, or finalizers removed)
        if key is not None and alive and self.objects[key].deleted:
            await self._collect_garbage(self.objects[key].last.get("metadata", {}).get("uid"))
        return response

    def _stamp(self, request: rendering.Request) -> None:
        version = str(next(self._versions))
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["generation"] = 1
            meta["resourceVersion"] = version
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            if request.resource == CORE_PODS:
                request.data["status"] = self._kubelet_status()
        elif request.action == enums.action.UPDATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {}) or {}
            request.data["metadata"] = meta
            meta["resourceVersion"] = version
            if "spec" in request.data and request.subresource is None:
                meta["generation"] = self._generation(request) + 1
        elif request.action == enums.action.UPDATE and isinstance(request.data, list):
            bump = {"op": "add", "path": "/metadata/resourceVersion", "value": version}
            request.data.append(bump)
            if any(str(op.get("path", "")).startswith("/spec") for op in request.data):
                generation = self._generation(request) + 1
                request.data.append(
                    {"op": "add", "path": "/metadata/generation", "value": generation}
                )

    def _generation(self, request: rendering.Request) -> int:
        key = _object_key(request)
        if key is not None and key in self.objects and not self.objects[key].deleted:
            return int(self.objects[key].get("metadata", {}).get("generation", 1))
        return 0

    def _kubelet_status(self) -> dict[str, Any]:
        placed = sum(
            1
            for (resource, _, _), obj in self.objects.items()
            if resource == CORE_PODS and not obj.deleted
            and obj.get("status", {}).get("phase") == "Running"
        )
        if self.node_capacity is not None and placed >= self.node_capacity:
            return {
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
                ],
            }
        return {
            "phase": "Running",
            "podIP": self.pod_ip,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
        }

    async def _collect_garbage(self, owner_uid: str | None) -> None:
        """Delete the dependents of a deleted owner (and theirs), as the GC controller does."""
        gone = {owner_uid} if owner_uid else set()
        while gone:
            found: set[str] = set()
            async with self._lock:
                for (resource, _, _), obj in list(self.objects.items()):
                    if obj.deleted:
                        continue
                    references = obj.get("metadata", {}).get("ownerReferences", [])
                    if any(o.get("uid") in gone for o in references):
                        obj.delete()
                        found.add(obj.last.get("metadata", {}).get("uid"))
                        await self._buses[resource].put({"type": "DELETED", "object": obj.last.raw})
            gone = found

    async def set_status(
        self, resource: Any, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Test hook: what a kubelet would report (e.g. a pod that exited)."""
        key = (kmock.resource(resource) if isinstance(resource, str) else resource, namespace, name)
        async with self._lock:
            obj = self.objects[key]
            version = str(next(self._versions))
            obj.patch({"status": status, "metadata": {"resourceVersion": version}})
            await self._buses[key[0]].put({"type": "MODIFIED", "object": obj.raw})

    # --- 2. JSON-patch test failures are conflicts ----------------------------------------------
    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, jsonpatch.JsonPatchTestFailed | jsonpatch.JsonPatchConflict):
            exc = kmock.KubernetesError(status=422, reason="Invalid", message=str(exc))
        return await super()._render_error(exc)

    # --- 3. lists and discovery in the real shapes ---------------------------------------------
    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_version(request)
        if isinstance(payload, dict) and str(payload.get("groupVersion", "")).startswith("/"):
            payload["groupVersion"] = payload["groupVersion"][1:]  # the core group is ""
        return payload

    def _matching(self, request: rendering.Request) -> list[dict[str, Any]]:
        selector = request.params.get("labelSelector", "")
        found = []
        for (resource, namespace, _), obj in self.objects.items():
            if obj.deleted or resource != request.resource:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            raw = obj.raw
            labels = raw.get("metadata", {}).get("labels", {})
            if selector and not selector_matches(selector, labels):
                continue
            found.append(raw)
        return found

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        assert request.resource is not None
        async with self._lock:
            items = self._matching(request)
        info = self.resources.get(request.resource, None)
        # kmock types the values as ResourceInfo | ResourceDict (what may be assigned), but it
        # converts a dict on assignment: what it hands back is a ResourceInfo.
        kind = info.kind if isinstance(info, kmock.ResourceInfo) and info.kind else ""
        group, version = request.resource.group, request.resource.version
        return {
            "apiVersion": f"{group}/{version}" if group else str(version),
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(next(self._versions))},
            "items": items,
        }

    # --- 4. 5. watches without a gap, with label selectors -------------------------------------
    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""
        assert request.resource is not None
        bus = self._buses[request.resource]
        selector = request.params.get("labelSelector", "")
        async with self._lock:  # the writers put events under this lock: nothing slips between
            snapshot = self._matching(request)
            mark = await bus.mark()
        since = request.params.get("resourceVersion", "")
        try:
            for raw in snapshot:
                version = raw.get("metadata", {}).get("resourceVersion", "")
                if not since.isdigit():
                    yield {"type": "ADDED", "object": raw}
                elif version.isdigit() and int(version) > int(since):
                    yield {"type": "MODIFIED", "object": raw}  # changed after the list
            async for event in bus.stream(since=mark):
                meta = event.get("object", {}).get("metadata", {})
                if request.namespace is not None and meta.get("namespace") != request.namespace:
                    continue
                if request.name is not None and meta.get("name") != request.name:
                    continue
                if selector and not selector_matches(selector, meta.get("labels", {})):
                    continue
                yield event
        finally:
            await bus.unmark(mark)

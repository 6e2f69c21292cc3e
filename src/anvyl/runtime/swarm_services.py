"""Model services on a Swarm manager: create, list, inspect, scale, remove, and their key secrets.

Every engine call a Swarm deployment makes goes through here and `DockerDriver.engine_errors`
(the only place Docker errors become Anvyl errors). Services come back as the engine's own
`GET /services` documents (plain dicts); the pure readers below take what Anvyl needs from
them. A deployment's API key is a Swarm secret named after the deployment (a fresh suffix
each time: secrets are immutable), labelled so a removal finds every one.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from anvyl import config
from anvyl.errors import NotFound
from anvyl.runtime.driver import DockerDriver
from anvyl.runtime.swarm import ModelServiceSpec

SECRET_PREFIX = "anvyl-api-key-"


def list_services(driver: DockerDriver, labels: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every service matching all the label selectors ("k=v" or "k"); every one without."""
    filters = {"label": list(labels)} if labels else None
    with driver.engine_errors():
        return [dict(s) for s in driver.client.api.services(filters=filters)]


def deployment_services(driver: DockerDriver, deployment_id: str) -> list[dict[str, Any]]:
    """The services of one deployment (a start may have made one before it failed)."""
    return list_services(driver, [f"{config.LABEL_DEPLOYMENT}={deployment_id}"])


def inspect_service(driver: DockerDriver, service_id: str) -> dict[str, Any]:
    """The service's document; NotFound when it is gone (or was never created)."""
    if not service_id:
        raise NotFound("the service is not created yet")
    with driver.engine_errors():
        return dict(driver.client.api.inspect_service(service_id))


def create_service(driver: DockerDriver, service: ModelServiceSpec) -> str:
    """Create the service (the Swarm then starts its replicas); its id."""
    with driver.engine_errors():
        created = driver.client.api.create_service(**service.create_kwargs())
    return str(created["ID"])


def scale_service(driver: DockerDriver, service_id: str, replicas: int) -> None:
    """Ask for `replicas` tasks (the rest of the spec kept)."""
    with driver.engine_errors():
        driver.client.services.get(service_id).scale(replicas)


def remove_service(driver: DockerDriver, service_id: str, deployment_id: str = "") -> None:
    """Remove the service (Swarm stops its tasks gracefully) and the deployment's key secrets.

    Either may be gone already; an empty `service_id` removes only the secrets.
    """
    try:
        with driver.engine_errors():
            api = driver.client.api
            if service_id:
                try:
                    with driver.engine_errors():
                        api.remove_service(service_id)
                except NotFound:
                    pass
            if not deployment_id:
                return
            by_label = {"label": f"{config.LABEL_DEPLOYMENT}={deployment_id}"}
            found = api.secrets(filters={"name": secret_name(deployment_id)})
            found += api.secrets(filters=by_label)
            for secret_id in {f["ID"] for f in found}:
                api.remove_secret(secret_id)
    except NotFound:
        pass


def create_key_secret(
    driver: DockerDriver, deployment_id: str, key: str, labels: Mapping[str, str]
) -> tuple[str, str]:
    """The API key as a Swarm secret: (secret id, secret name)."""
    name = secret_name(deployment_id)
    with driver.engine_errors():
        api = driver.client.api
        if api.secrets(filters={"name": name}):
            name = f"{name}-{secrets.token_hex(3)}"
        created = api.create_secret(
            name,
            key.encode(),
            labels={
                **labels,
                config.LABEL_MANAGED: "true",
                config.LABEL_DEPLOYMENT: deployment_id,
            },
        )
    return str(created["ID"]), name


def replace_key_secret(
    driver: DockerDriver, service_id: str, deployment_id: str, key: str, labels: Mapping[str, str]
) -> None:
    """Give a running service a new API key: a new secret, its replicas restarted with it."""
    attrs = inspect_service(driver, service_id)
    new_id, new_name = create_key_secret(driver, deployment_id, key, labels)
    template = dict(attrs["Spec"]["TaskTemplate"])
    container = dict(template["ContainerSpec"])
    refs = [dict(r) for r in container.get("Secrets") or []]
    for ref in refs:
        if ref.get("SecretName", "").startswith(secret_name(deployment_id)):
            ref["SecretID"], ref["SecretName"] = new_id, new_name
    container["Secrets"] = refs
    template["ContainerSpec"] = container
    template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
    with driver.engine_errors():
        driver.client.api.update_service(  # the rest of the spec (ports, mode) kept
            attrs["ID"],
            attrs["Version"]["Index"],
            task_template=template,
            fetch_current_spec=True,
        )


# -- pure readers of a service document -------------------------------------------------------


def secret_name(deployment_id: str) -> str:
    """The name of a deployment's API key secret (before any suffix)."""
    return f"{SECRET_PREFIX}{deployment_id}"


def service_name(attrs: Mapping[str, Any]) -> str:
    """The service's name."""
    return str((attrs.get("Spec") or {}).get("Name") or "")


def desired_replicas(attrs: Mapping[str, Any]) -> int:
    """The replica count the service asks for now (the engine is the truth; scale changes it)."""
    mode = (attrs.get("Spec") or {}).get("Mode") or {}
    return int((mode.get("Replicated") or {}).get("Replicas", 1))


def published_port(attrs: Mapping[str, Any]) -> int:
    """The API port the service's spec publishes on each node (0: none)."""
    ports = ((attrs.get("Spec") or {}).get("EndpointSpec") or {}).get("Ports") or []
    return next((int(p["PublishedPort"]) for p in ports if p.get("PublishedPort")), 0)


def ports_in_use(attrs: Mapping[str, Any]) -> list[int]:
    """The ports the service publishes now (its endpoint, as the engine reports it)."""
    ports = (attrs.get("Endpoint") or {}).get("Ports") or []
    return [int(p["PublishedPort"]) for p in ports if p.get("PublishedPort")]

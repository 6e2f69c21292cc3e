"""Swarm services through `anvyl.runtime`: readers of a service document, errors at the edge.

Creating, scaling and removing services runs against a lab of real engines in `tests/swarm/`;
here the local engine, which manages no Swarm, shows that its refusal comes back as Anvyl's
error, not Docker's.
"""

from __future__ import annotations

import pytest

from anvyl.errors import AnvylError, NotFound
from anvyl.runtime import DockerDriver
from anvyl.runtime import swarm_services as services

SERVICE = {
    "ID": "s1",
    "Spec": {
        "Name": "chat",
        "Mode": {"Replicated": {"Replicas": 3}},
        "EndpointSpec": {"Ports": [{"TargetPort": 8080, "PublishedPort": 9001}]},
    },
    "Endpoint": {"Ports": [{"TargetPort": 8080, "PublishedPort": 9001}, {"TargetPort": 1}]},
}


def test_readers_of_a_service_document() -> None:
    assert services.service_name(SERVICE) == "chat"
    assert services.desired_replicas(SERVICE) == 3
    assert services.published_port(SERVICE) == 9001
    assert services.ports_in_use(SERVICE) == [9001]
    assert services.secret_name("d-1") == "anvyl-api-key-d-1"


def test_readers_of_a_bare_document() -> None:
    assert services.service_name({}) == ""
    assert services.desired_replicas({}) == 1
    assert services.published_port({}) == 0
    assert services.ports_in_use({}) == []


def test_a_service_never_created_is_not_found() -> None:
    with pytest.raises(NotFound):
        services.inspect_service(DockerDriver(), "")


def test_an_engine_without_a_swarm_answers_with_anvyls_error() -> None:
    driver = DockerDriver()
    try:
        with pytest.raises(AnvylError) as caught:
            services.list_services(driver)
        assert "swarm" in caught.value.message.lower()
        assert not type(caught.value).__module__.startswith("docker")
    finally:
        driver.close()

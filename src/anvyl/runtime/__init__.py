"""Container runtimes: the Docker driver (`DockerDriver`) and the per-host registry (`Engines`).

The server holds one `Engines`; anything that needs an engine asks it for the host's driver and
hands that driver to this package's verbs (the driver's methods, `swarm`, `swarm_services`,
`image_transfer`, `volumes`, `images`). Only this package touches `driver.client` (the `docker`
SDK) and turns Docker's errors into Anvyl's (`DockerDriver.engine_errors`).
"""

from anvyl.runtime.calls import CallCounter, count_engine_calls
from anvyl.runtime.driver import DockerDriver, LogStream, docker_host_from_env
from anvyl.runtime.engines import Engines
from anvyl.runtime.records import ContainerInfo, EngineInfo, ExecResult, PortInfo, StatsSample

__all__ = [
    "CallCounter",
    "ContainerInfo",
    "DockerDriver",
    "EngineInfo",
    "Engines",
    "ExecResult",
    "LogStream",
    "PortInfo",
    "StatsSample",
    "count_engine_calls",
    "docker_host_from_env",
]

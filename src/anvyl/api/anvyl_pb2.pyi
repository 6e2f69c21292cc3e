from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOST_STATUS_UNSPECIFIED: _ClassVar[HostStatus]
    HOST_STATUS_REACHABLE: _ClassVar[HostStatus]
    HOST_STATUS_UNREACHABLE: _ClassVar[HostStatus]
HOST_STATUS_UNSPECIFIED: HostStatus
HOST_STATUS_REACHABLE: HostStatus
HOST_STATUS_UNREACHABLE: HostStatus

class BuildImageRequest(_message.Message):
    __slots__ = ("host_id", "base_image", "ca_bundle", "tag")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CA_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    base_image: str
    ca_bundle: bytes
    tag: str
    def __init__(self, host_id: _Optional[str] = ..., base_image: _Optional[str] = ..., ca_bundle: _Optional[bytes] = ..., tag: _Optional[str] = ...) -> None: ...

class BuildImageEvent(_message.Message):
    __slots__ = ("line", "image")
    LINE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    line: str
    image: BuiltImage
    def __init__(self, line: _Optional[str] = ..., image: _Optional[_Union[BuiltImage, _Mapping]] = ...) -> None: ...

class BuiltImage(_message.Message):
    __slots__ = ("ref", "size_bytes")
    REF_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ref: str
    size_bytes: int
    def __init__(self, ref: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("id", "name", "address", "status", "status_reason", "cpus", "memory_bytes", "engine_version", "running_containers", "local", "created_at", "runtime")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNNING_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    address: str
    status: HostStatus
    status_reason: str
    cpus: int
    memory_bytes: int
    engine_version: str
    running_containers: int
    local: bool
    created_at: float
    runtime: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., address: _Optional[str] = ..., status: _Optional[_Union[HostStatus, str]] = ..., status_reason: _Optional[str] = ..., cpus: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., engine_version: _Optional[str] = ..., running_containers: _Optional[int] = ..., local: _Optional[bool] = ..., created_at: _Optional[float] = ..., runtime: _Optional[str] = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts",)
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    def __init__(self, hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ...) -> None: ...

class GetHostRequest(_message.Message):
    __slots__ = ("host_id",)
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    def __init__(self, host_id: _Optional[str] = ...) -> None: ...

class GetHostMetricsRequest(_message.Message):
    __slots__ = ("host_id",)
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    def __init__(self, host_id: _Optional[str] = ...) -> None: ...

class ContainerMetrics(_message.Message):
    __slots__ = ("id", "name", "cpu_percent", "memory_used_bytes", "memory_limit_bytes", "deployment", "task_id", "state")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    cpu_percent: float
    memory_used_bytes: int
    memory_limit_bytes: int
    deployment: str
    task_id: str
    state: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., cpu_percent: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_limit_bytes: _Optional[int] = ..., deployment: _Optional[str] = ..., task_id: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class EngineFacts(_message.Message):
    __slots__ = ("name", "version", "api_version", "os", "kernel_version", "architecture", "cpus", "memory_bytes", "containers", "containers_running", "images", "storage_driver", "cgroup_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_DRIVER_FIELD_NUMBER: _ClassVar[int]
    CGROUP_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    api_version: str
    os: str
    kernel_version: str
    architecture: str
    cpus: int
    memory_bytes: int
    containers: int
    containers_running: int
    images: int
    storage_driver: str
    cgroup_version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., api_version: _Optional[str] = ..., os: _Optional[str] = ..., kernel_version: _Optional[str] = ..., architecture: _Optional[str] = ..., cpus: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., containers: _Optional[int] = ..., containers_running: _Optional[int] = ..., images: _Optional[int] = ..., storage_driver: _Optional[str] = ..., cgroup_version: _Optional[str] = ...) -> None: ...

class NodeMetrics(_message.Message):
    __slots__ = ("node", "nano_cpus", "engine_url", "engine_state", "engine_reason", "engine")
    NODE_FIELD_NUMBER: _ClassVar[int]
    NANO_CPUS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_URL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_STATE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_REASON_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    nano_cpus: int
    engine_url: str
    engine_state: str
    engine_reason: str
    engine: EngineFacts
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ..., nano_cpus: _Optional[int] = ..., engine_url: _Optional[str] = ..., engine_state: _Optional[str] = ..., engine_reason: _Optional[str] = ..., engine: _Optional[_Union[EngineFacts, _Mapping]] = ...) -> None: ...

class HostMetrics(_message.Message):
    __slots__ = ("host_id", "cpu_count", "cpu_percent", "memory_used_bytes", "memory_total_bytes", "disk_path", "disk_used_bytes", "disk_total_bytes", "load1", "load5", "load15", "containers", "node", "machine_measured", "container_stats", "container_stats_reason")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_PATH_FIELD_NUMBER: _ClassVar[int]
    DISK_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD1_FIELD_NUMBER: _ClassVar[int]
    LOAD5_FIELD_NUMBER: _ClassVar[int]
    LOAD15_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    MACHINE_MEASURED_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_STATS_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_STATS_REASON_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    cpu_count: int
    cpu_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    disk_path: str
    disk_used_bytes: int
    disk_total_bytes: int
    load1: float
    load5: float
    load15: float
    containers: _containers.RepeatedCompositeFieldContainer[ContainerMetrics]
    node: NodeMetrics
    machine_measured: bool
    container_stats: bool
    container_stats_reason: str
    def __init__(self, host_id: _Optional[str] = ..., cpu_count: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., disk_path: _Optional[str] = ..., disk_used_bytes: _Optional[int] = ..., disk_total_bytes: _Optional[int] = ..., load1: _Optional[float] = ..., load5: _Optional[float] = ..., load15: _Optional[float] = ..., containers: _Optional[_Iterable[_Union[ContainerMetrics, _Mapping]]] = ..., node: _Optional[_Union[NodeMetrics, _Mapping]] = ..., machine_measured: _Optional[bool] = ..., container_stats: _Optional[bool] = ..., container_stats_reason: _Optional[str] = ...) -> None: ...

class PortBinding(_message.Message):
    __slots__ = ("container_port", "protocol", "host_ip", "host_port")
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    HOST_IP_FIELD_NUMBER: _ClassVar[int]
    HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    container_port: int
    protocol: str
    host_ip: str
    host_port: int
    def __init__(self, container_port: _Optional[int] = ..., protocol: _Optional[str] = ..., host_ip: _Optional[str] = ..., host_port: _Optional[int] = ...) -> None: ...

class Container(_message.Message):
    __slots__ = ("id", "name", "image", "state", "status", "host_id", "labels", "created_at", "ports")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    image: str
    state: str
    status: str
    host_id: str
    labels: _containers.ScalarMap[str, str]
    created_at: float
    ports: _containers.RepeatedCompositeFieldContainer[PortBinding]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., image: _Optional[str] = ..., state: _Optional[str] = ..., status: _Optional[str] = ..., host_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[float] = ..., ports: _Optional[_Iterable[_Union[PortBinding, _Mapping]]] = ...) -> None: ...

class ListContainersRequest(_message.Message):
    __slots__ = ("all", "host_id", "labels")
    ALL_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    all: bool
    host_id: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, all: _Optional[bool] = ..., host_id: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class ListContainersResponse(_message.Message):
    __slots__ = ("containers",)
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    containers: _containers.RepeatedCompositeFieldContainer[Container]
    def __init__(self, containers: _Optional[_Iterable[_Union[Container, _Mapping]]] = ...) -> None: ...

class GetContainerRequest(_message.Message):
    __slots__ = ("container", "host_id")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    container: str
    host_id: str
    def __init__(self, container: _Optional[str] = ..., host_id: _Optional[str] = ...) -> None: ...

class StreamLogsRequest(_message.Message):
    __slots__ = ("container", "host_id", "follow", "tail")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    container: str
    host_id: str
    follow: bool
    tail: int
    def __init__(self, container: _Optional[str] = ..., host_id: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ExecContainerRequest(_message.Message):
    __slots__ = ("container", "host_id", "command")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    container: str
    host_id: str
    command: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, container: _Optional[str] = ..., host_id: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ...) -> None: ...

class ExecContainerResponse(_message.Message):
    __slots__ = ("exit_code", "stdout", "stderr")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    stdout: bytes
    stderr: bytes
    def __init__(self, exit_code: _Optional[int] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ...) -> None: ...

class StopContainerRequest(_message.Message):
    __slots__ = ("container", "host_id", "timeout_seconds")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    container: str
    host_id: str
    timeout_seconds: int
    def __init__(self, container: _Optional[str] = ..., host_id: _Optional[str] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model_id", "keep_alive")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    keep_alive: str
    def __init__(self, model_id: _Optional[str] = ..., keep_alive: _Optional[str] = ...) -> None: ...

class DeploymentLogsRequest(_message.Message):
    __slots__ = ("ref", "host_id", "follow", "tail")
    REF_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    ref: str
    host_id: str
    follow: bool
    tail: int
    def __init__(self, ref: _Optional[str] = ..., host_id: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "path", "source", "architecture", "parameters", "quantization", "size_bytes", "context_length", "memory_bytes", "running", "origin", "tool_format")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    TOOL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    id: str
    path: str
    source: str
    architecture: str
    parameters: int
    quantization: str
    size_bytes: int
    context_length: int
    memory_bytes: int
    running: int
    origin: str
    tool_format: str
    def __init__(self, id: _Optional[str] = ..., path: _Optional[str] = ..., source: _Optional[str] = ..., architecture: _Optional[str] = ..., parameters: _Optional[int] = ..., quantization: _Optional[str] = ..., size_bytes: _Optional[int] = ..., context_length: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., running: _Optional[int] = ..., origin: _Optional[str] = ..., tool_format: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class ImportModelRequest(_message.Message):
    __slots__ = ("path", "name", "bundled", "link")
    PATH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLED_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    path: str
    name: str
    bundled: str
    link: bool
    def __init__(self, path: _Optional[str] = ..., name: _Optional[str] = ..., bundled: _Optional[str] = ..., link: _Optional[bool] = ...) -> None: ...

class PullModelRequest(_message.Message):
    __slots__ = ("repo", "file", "name")
    REPO_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    repo: str
    file: str
    name: str
    def __init__(self, repo: _Optional[str] = ..., file: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ImportModelEvent(_message.Message):
    __slots__ = ("step", "fraction", "model")
    STEP_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    step: str
    fraction: float
    model: Model
    def __init__(self, step: _Optional[str] = ..., fraction: _Optional[float] = ..., model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class RemoveModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class StartModelRequest(_message.Message):
    __slots__ = ("model_id", "name", "port", "host_id", "memory", "cpus", "ctx", "max_queue", "api_key", "bind", "force", "detach", "startup_script", "dtype", "wait_timeout_seconds", "restart", "replicas", "runtime", "allow_origins", "keep_alive")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    CTX_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    BIND_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    STARTUP_SCRIPT_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    ALLOW_ORIGINS_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    name: str
    port: int
    host_id: str
    memory: str
    cpus: float
    ctx: int
    max_queue: int
    api_key: str
    bind: str
    force: bool
    detach: bool
    startup_script: str
    dtype: str
    wait_timeout_seconds: float
    restart: str
    replicas: int
    runtime: str
    allow_origins: _containers.RepeatedScalarFieldContainer[str]
    keep_alive: str
    def __init__(self, model_id: _Optional[str] = ..., name: _Optional[str] = ..., port: _Optional[int] = ..., host_id: _Optional[str] = ..., memory: _Optional[str] = ..., cpus: _Optional[float] = ..., ctx: _Optional[int] = ..., max_queue: _Optional[int] = ..., api_key: _Optional[str] = ..., bind: _Optional[str] = ..., force: _Optional[bool] = ..., detach: _Optional[bool] = ..., startup_script: _Optional[str] = ..., dtype: _Optional[str] = ..., wait_timeout_seconds: _Optional[float] = ..., restart: _Optional[str] = ..., replicas: _Optional[int] = ..., runtime: _Optional[str] = ..., allow_origins: _Optional[_Iterable[str]] = ..., keep_alive: _Optional[str] = ...) -> None: ...

class StartModelEvent(_message.Message):
    __slots__ = ("phase", "message", "deployment")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    phase: str
    message: str
    deployment: Deployment
    def __init__(self, phase: _Optional[str] = ..., message: _Optional[str] = ..., deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("id", "name", "model_id", "host_id", "container_id", "url", "state", "state_reason", "port", "bind", "image", "created_at", "uptime_seconds", "memory_used_bytes", "memory_limit_bytes", "tokens_per_second", "requests_total", "generated_tokens_total", "replicas", "runtime", "on_demand", "keep_alive_seconds", "unload_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    BIND_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    ON_DEMAND_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UNLOAD_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    model_id: str
    host_id: str
    container_id: str
    url: str
    state: str
    state_reason: str
    port: int
    bind: str
    image: str
    created_at: float
    uptime_seconds: float
    memory_used_bytes: int
    memory_limit_bytes: int
    tokens_per_second: float
    requests_total: int
    generated_tokens_total: int
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    runtime: str
    on_demand: bool
    keep_alive_seconds: float
    unload_at: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., model_id: _Optional[str] = ..., host_id: _Optional[str] = ..., container_id: _Optional[str] = ..., url: _Optional[str] = ..., state: _Optional[str] = ..., state_reason: _Optional[str] = ..., port: _Optional[int] = ..., bind: _Optional[str] = ..., image: _Optional[str] = ..., created_at: _Optional[float] = ..., uptime_seconds: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_limit_bytes: _Optional[int] = ..., tokens_per_second: _Optional[float] = ..., requests_total: _Optional[int] = ..., generated_tokens_total: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., runtime: _Optional[str] = ..., on_demand: _Optional[bool] = ..., keep_alive_seconds: _Optional[float] = ..., unload_at: _Optional[float] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("slot", "task_id", "node_id", "node", "address", "state", "since", "restarts", "ready", "task_error")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    TASK_ERROR_FIELD_NUMBER: _ClassVar[int]
    slot: int
    task_id: str
    node_id: str
    node: str
    address: str
    state: str
    since: float
    restarts: int
    ready: bool
    task_error: str
    def __init__(self, slot: _Optional[int] = ..., task_id: _Optional[str] = ..., node_id: _Optional[str] = ..., node: _Optional[str] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., since: _Optional[float] = ..., restarts: _Optional[int] = ..., ready: _Optional[bool] = ..., task_error: _Optional[str] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("host_id",)
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    def __init__(self, host_id: _Optional[str] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments",)
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    def __init__(self, deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ...) -> None: ...

class StopModelRequest(_message.Message):
    __slots__ = ("ref", "host_id", "timeout_seconds")
    REF_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ref: str
    host_id: str
    timeout_seconds: int
    def __init__(self, ref: _Optional[str] = ..., host_id: _Optional[str] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class InitClusterRequest(_message.Message):
    __slots__ = ("advertise_addr", "listen_addr")
    ADVERTISE_ADDR_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDR_FIELD_NUMBER: _ClassVar[int]
    advertise_addr: str
    listen_addr: str
    def __init__(self, advertise_addr: _Optional[str] = ..., listen_addr: _Optional[str] = ...) -> None: ...

class ClusterInfo(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class GetJoinTokenRequest(_message.Message):
    __slots__ = ("role",)
    ROLE_FIELD_NUMBER: _ClassVar[int]
    role: str
    def __init__(self, role: _Optional[str] = ...) -> None: ...

class JoinToken(_message.Message):
    __slots__ = ("token", "manager_address", "command")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    MANAGER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    token: str
    manager_address: str
    command: str
    def __init__(self, token: _Optional[str] = ..., manager_address: _Optional[str] = ..., command: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "hostname", "address", "role", "availability", "state", "cpus", "memory_bytes", "engine_version", "labels", "leader", "models", "engine_url", "engine_state", "engine_reason")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_URL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_STATE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    hostname: str
    address: str
    role: str
    availability: str
    state: str
    cpus: int
    memory_bytes: int
    engine_version: str
    labels: _containers.ScalarMap[str, str]
    leader: bool
    models: _containers.RepeatedScalarFieldContainer[str]
    engine_url: str
    engine_state: str
    engine_reason: str
    def __init__(self, id: _Optional[str] = ..., hostname: _Optional[str] = ..., address: _Optional[str] = ..., role: _Optional[str] = ..., availability: _Optional[str] = ..., state: _Optional[str] = ..., cpus: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., engine_version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., leader: _Optional[bool] = ..., models: _Optional[_Iterable[str]] = ..., engine_url: _Optional[str] = ..., engine_state: _Optional[str] = ..., engine_reason: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class SetNodeAvailabilityRequest(_message.Message):
    __slots__ = ("node", "availability")
    NODE_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    node: str
    availability: str
    def __init__(self, node: _Optional[str] = ..., availability: _Optional[str] = ...) -> None: ...

class ScaleModelRequest(_message.Message):
    __slots__ = ("ref", "replicas")
    REF_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ref: str
    replicas: int
    def __init__(self, ref: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class SetNodeEngineRequest(_message.Message):
    __slots__ = ("node", "url", "tls_ca", "tls_cert", "tls_key")
    NODE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    TLS_CA_FIELD_NUMBER: _ClassVar[int]
    TLS_CERT_FIELD_NUMBER: _ClassVar[int]
    TLS_KEY_FIELD_NUMBER: _ClassVar[int]
    node: str
    url: str
    tls_ca: bytes
    tls_cert: bytes
    tls_key: bytes
    def __init__(self, node: _Optional[str] = ..., url: _Optional[str] = ..., tls_ca: _Optional[bytes] = ..., tls_cert: _Optional[bytes] = ..., tls_key: _Optional[bytes] = ...) -> None: ...

class RemoveNodeEngineRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

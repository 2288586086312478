"""A real Apache Kafka broker on loopback, for tests, demos and local runs — no Docker.

The broker jars come from Maven Central (``org.apache.kafka:kafka_2.13`` plus a log4j2
binding, which the published POM leaves out), fetched once with ``mvn
dependency:copy-dependencies`` into a cache folder that git ignores; every later start
reuses them. A node runs in KRaft mode as combined broker and controller on 127.0.0.1
with free ports, replication factors that fit the node count, transactions enabled and
``auto.create.topics.enable=false`` (workers never create their topics; a producer
must not create a 1-partition topic by accident).

``LocalKafka(nodes=1)`` starts one node (storage formatted ``--standalone``);
``LocalKafka(nodes=3)`` starts a 3-node quorum on loopback for failover tests. If the
environment sets ``KAFKA_BOOTSTRAP``, :func:`broker_for_tests` uses that broker instead.

Run ``python -m rater.localkafka fetch`` to warm the cache, ``... run`` to keep a broker
up in the foreground until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

KAFKA_VERSION = os.environ.get("RATER_KAFKA_VERSION", "4.1.1")
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.17"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.rater</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <!-- the broker POM has no logging binding: log4j2 behind slf4j 2 -->
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
"""


class KafkaError(RuntimeError):
    """The local broker could not be fetched, started or reached."""


def cache_dir() -> Path:
    """Where the broker jars live: ``RATER_CACHE_DIR``, else ``.cache/`` of a source
    checkout (git-ignored), else ``~/.cache/rater``."""
    configured = os.environ.get("RATER_CACHE_DIR")
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists():
        return checkout / ".cache"
    return Path.home() / ".cache" / "rater"


def ensure_jars(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """Return the folder of broker jars for ``version``, fetching them with Maven once."""
    home = cache_dir() / f"kafka-{version}"
    libs = home / "libs"
    marker = home / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise KafkaError("Maven (mvn) is needed once to fetch the Kafka broker jars")
    if shutil.which("java") is None:
        raise KafkaError("Java 17+ is needed to run the Kafka broker")
    home.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(libs, ignore_errors=True)
    (home / "pom.xml").write_text(
        _POM.format(kafka=version, slf4j=SLF4J_VERSION, log4j=LOG4J_VERSION)
    )
    cmd = [
        "mvn",
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(home / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    print(f"fetching Apache Kafka {version} broker jars from Maven Central ...", file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise KafkaError(f"mvn failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    if not any(libs.glob(f"kafka_2.13-{version}.jar")):
        raise KafkaError(f"mvn finished but {libs} has no kafka_2.13-{version}.jar")
    marker.write_text(version)
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL the child if the process that started it dies, so no broker or
    worker is left behind by a killed test run."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgrp()


def spawn(cmd: list[str], *, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a child in its own process group that dies with us; output goes to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only Linux prctl + setpgrp
        )


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; always reaps the child."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


@dataclass
class KafkaNode:
    """One KRaft node (broker + controller) of a local cluster."""

    node_id: int
    port: int
    controller_port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "broker.log"

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class LocalKafka:
    """A local Apache Kafka cluster of ``nodes`` KRaft nodes on 127.0.0.1."""

    nodes: int = 1
    version: str = KAFKA_VERSION
    heap: str = "512m"
    log_level: str = "WARN"
    workdir: Path | None = None
    members: list[KafkaNode] = field(default_factory=list)
    _owns_workdir: bool = False

    @property
    def bootstrap(self) -> str:
        """The ``host:port,...`` list clients connect to."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.members)

    def start(self) -> LocalKafka:
        """Fetch jars if needed, format storage, start every node, wait until usable."""
        libs = ensure_jars(self.version)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="rater-kafka-"))
            self._owns_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log4j2.properties").write_text(_LOG4J2.format(level=self.log_level))
        cluster_id = _new_cluster_id()
        self.members = [
            KafkaNode(i + 1, free_port(), free_port(), self.workdir / f"node-{i + 1}")
            for i in range(self.nodes)
        ]
        try:
            for node in self.members:
                node.workdir.mkdir(parents=True, exist_ok=True)
                config = self._write_config(node)
                self._format(libs, node, config, cluster_id)
            for node in self.members:
                node.proc = spawn(
                    self._java(libs, "kafka.Kafka", str(node.workdir / "server.properties")),
                    log=node.log,
                    env=self._env(),
                )
            asyncio.run(self.wait_ready())
        except BaseException:
            self.stop()
            raise
        return self

    def _write_config(self, node: KafkaNode) -> Path:
        rf = min(3, self.nodes)
        settings = {
            "node.id": node.node_id,
            "process.roles": "broker,controller",
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.workdir / "data"),
            "metadata.log.dir": str(node.workdir / "meta"),
            "auto.create.topics.enable": "false",
            "num.partitions": 1,
            "default.replication.factor": rf,
            "min.insync.replicas": max(1, rf - 1),
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 8,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": max(1, rf - 1),
            "transaction.state.log.num.partitions": 8,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": max(1, rf - 1),
            "group.initial.rebalance.delay.ms": 0,
            "log.segment.bytes": 64 * 1024 * 1024,
            "log.retention.check.interval.ms": 60_000,
        }
        if self.nodes == 1:
            settings["controller.quorum.bootstrap.servers"] = f"127.0.0.1:{node.controller_port}"
        else:
            settings["controller.quorum.voters"] = ",".join(
                f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.members
            )
        path = node.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        return path

    def _env(self) -> dict[str, str]:
        return dict(os.environ, LC_ALL="C")

    def _java(self, libs: Path, main: str, *args: str) -> list[str]:
        assert self.workdir is not None
        return [
            "java",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _format(self, libs: Path, node: KafkaNode, config: Path, cluster_id: str) -> None:
        # "=": a base64url cluster id may start with "-", which would read as an option
        args = ["format", f"--cluster-id={cluster_id}", "-c", str(config)]
        if self.nodes == 1:
            args.append("--standalone")
        done = subprocess.run(
            self._java(libs, "kafka.tools.StorageTool", *args),
            capture_output=True,
            text=True,
            env=self._env(),
            check=False,
        )
        if done.returncode != 0:
            raise KafkaError(f"formatting node {node.node_id} failed:\n{done.stdout}{done.stderr}")

    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until a real metadata request lists every node of the cluster."""
        deadline = time.monotonic() + timeout_s
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            for node in self.members:
                if node.proc is not None and node.proc.poll() is not None:
                    raise KafkaError(
                        f"broker node {node.node_id} exited with {node.proc.returncode}:\n{node.log_tail()}"
                    )
            if not all(_accepts(n.port) for n in self.members):
                await asyncio.sleep(0.2)
                continue
            try:
                brokers = await describe_brokers(self.bootstrap)
                if len(brokers) >= self.nodes:
                    return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = exc
            await asyncio.sleep(0.25)
        tails = "\n".join(n.log_tail() for n in self.members)
        raise KafkaError(f"Kafka not ready after {timeout_s:.0f}s ({last_error!r}):\n{tails}")

    def stop_node(self, node: KafkaNode, *, kill: bool = False) -> None:
        """Stop one node (SIGTERM, or SIGKILL with ``kill``)."""
        if node.proc is None:
            return
        if kill:
            node.proc.kill()
            node.proc.wait()
        else:
            stop_process(node.proc)

    def start_node(self, node: KafkaNode) -> None:
        """Start a stopped node again on its ports and data (a broker restart) and wait
        until the cluster answers."""
        libs = ensure_jars(self.version)
        node.proc = spawn(self._java(libs, "kafka.Kafka", str(node.workdir / "server.properties")),
                          log=node.log, env=self._env())
        asyncio.run(self.wait_ready())

    def stop(self) -> None:
        """Stop every node cleanly and remove a temporary work folder."""
        for node in self.members:
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    node.proc.send_signal(signal.SIGTERM)
        for node in self.members:
            if node.proc is not None:
                stop_process(node.proc)
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def describe_brokers(bootstrap: str) -> list[int]:
    """Node ids the cluster reports in a metadata request (raises if unreachable)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        return sorted(int(b["node_id"]) for b in cluster["brokers"])
    finally:
        await admin.close()


@contextlib.contextmanager
def broker_for_tests(nodes: int = 1) -> Iterator[str]:
    """Yield a bootstrap string: ``KAFKA_BOOTSTRAP`` if set, else a fresh local cluster."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external and nodes == 1:
        asyncio.run(describe_brokers(external))
        yield external
        return
    with LocalKafka(nodes=nodes) as kafka:
        yield kafka.bootstrap


def main(argv: list[str] | None = None) -> int:
    """``fetch`` the jars, or ``run`` a broker in the foreground until Ctrl-C."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "run"
    if command == "fetch":
        print(ensure_jars(quiet=False))
        return 0
    if command == "run":
        nodes = int(args[1]) if len(args) > 1 else 1
        kafka = LocalKafka(nodes=nodes, log_level="INFO").start()
        print(f"Kafka {kafka.version} up: KAFKA_BOOTSTRAP={kafka.bootstrap}  (Ctrl-C stops it)", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            kafka.stop()
        return 0
    print("usage: python -m rater.localkafka [fetch | run [NODES]]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

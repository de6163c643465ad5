"""Worker configuration files: amqp1q's TOML/YAML shape and RoadRunner's .rr.yaml (no network)."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest

from amqp1q import (
    ConfigurationError,
    InvalidSetting,
    MissingDependency,
    ReconnectPolicy,
    RetryPolicy,
    TLSConfig,
    UnsupportedFeature,
)
from amqp1q.cli import main
from amqp1q.worker import WorkerConfig

SECRET = "hunter2"

NATIVE_TOML = f"""
registry = "myapp.jobs:registry"
url = "amqp://app:{SECRET}@rabbit:5672"
queue = "emails"
concurrency = 16
prefetch = 32
groups = 4
job_timeout = 60
grace = 10
wire_format = "roadrunner"
auto_ack = false
requeue_on_fail = false
priority = 3
container_id = "worker-1"
broker = "rabbitmq3"
exchange = "jobs"
routing_key = "emails"

[retry]
max_attempts = 3
initial_delay = 0.5

[reconnect]
max_attempts = 10

[tls]
insecure_skip_verify = true
"""

NATIVE_YAML = f"""
registry: myapp.jobs:registry
url: "amqp://app:{SECRET}@rabbit:5672"
queue: emails
concurrency: 16
prefetch: 32
groups: 4
job_timeout: 60
grace: 10
wire_format: roadrunner
auto_ack: false
requeue_on_fail: false
priority: 3
container_id: worker-1
broker: rabbitmq3
exchange: jobs
routing_key: emails
retry: {{max_attempts: 3, initial_delay: 0.5}}
reconnect: {{max_attempts: 10}}
tls: {{insecure_skip_verify: true}}
"""

RR_YAML = """
version: "3"
rpc:
  listen: tcp://127.0.0.1:6001
server:
  command: "php worker.php"
amqp1:
  addr: "amqp://${RR_TEST_HOST:-rabbit}:5672/"
  username: guest
  password: "p@ss/word"
  container_id: roadrunner-amqp1
  redial_timeout: 60
jobs:
  num_pollers: 10
  pool:
    num_workers: 10
  consume: ["emails", "local"]
  pipelines:
    emails:
      driver: amqp1
      config:
        queue: emails
        exchange: email-exchange
        exchange_type: direct
        routing_key: email.send
        prefetch: 10
        priority: 10
        durable: true
        auto_ack: false
        requeue_on_fail: true
    files:
      driver: amqp1
      queue: file-processing
      prefetch: 5
    local:
      driver: memory
      config: {priority: 1}
amqp1q:
  registry: myapp.jobs:registry
  concurrency: 8
"""


PIPELINE = "jobs:\n  pipelines:\n    p: {driver: amqp1, queue: q}\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- loading ------------------------------------------------------------------------------------


def test_a_toml_file_is_read_into_every_setting(tmp_path: Path) -> None:
    config = WorkerConfig.load(_write(tmp_path, "worker.toml", NATIVE_TOML))
    assert config.registry == "myapp.jobs:registry"
    assert config.resolve_url() == f"amqp://app:{SECRET}@rabbit:5672"
    assert (config.queue, config.concurrency, config.prefetch) == ("emails", 16, 32)
    assert config.groups == 4
    assert (config.job_timeout, config.grace, config.wire_format) == (60.0, 10.0, "roadrunner")
    assert config.retry == RetryPolicy(max_attempts=3, initial_delay=0.5)
    assert config.reconnect == ReconnectPolicy(max_attempts=10)
    assert config.tls == TLSConfig(insecure_skip_verify=True)
    assert config.roadrunner is False
    assert config.queue_options("amqps://app:x@rabbit") == {
        "wire_format": "roadrunner",
        "queue": "emails",
        "auto_ack": False,
        "requeue_on_fail": False,
        "priority": 3,
        "retry": RetryPolicy(max_attempts=3, initial_delay=0.5),
        "exchange": "jobs",
        "routing_key": "emails",
        "container_id": "worker-1",
        "broker": "rabbitmq3",
        "tls": TLSConfig(insecure_skip_verify=True),
        "reconnect": ReconnectPolicy(max_attempts=10),
    }


def test_yaml_and_toml_give_the_same_settings(tmp_path: Path) -> None:
    from_toml = WorkerConfig.load(_write(tmp_path, "w.toml", NATIVE_TOML))
    for name in ("w.yaml", "w.yml"):
        from_yaml = WorkerConfig.load(_write(tmp_path, name, NATIVE_YAML))
        assert attrs.evolve(from_yaml, source=None) == attrs.evolve(from_toml, source=None)


def test_url_env_is_read_when_the_url_is_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = WorkerConfig.load(_write(tmp_path, "w.toml", 'url_env = "MY_JOBS_URL"\n'))
    monkeypatch.delenv("MY_JOBS_URL", raising=False)
    with pytest.raises(InvalidSetting, match=r"w\.toml: url_env: .*MY_JOBS_URL is not set"):
        config.resolve_url()
    monkeypatch.setenv("MY_JOBS_URL", "memory://jobs")
    assert config.resolve_url() == "memory://jobs"
    assert config.job_queue().name == "jobs"


def test_an_empty_file_is_all_defaults(tmp_path: Path) -> None:
    config = WorkerConfig.load(_write(tmp_path, "w.yaml", "# nothing yet\n"))
    assert attrs.evolve(config, source=None) == WorkerConfig()
    assert config.queue_options("memory://q") == {"wire_format": "amqp1q"}


def test_a_roadrunner_file_maps_its_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("RR_TEST_HOST", raising=False)
    path = _write(tmp_path, ".rr.yaml", RR_YAML)
    with caplog.at_level(logging.INFO, logger="amqp1q.worker"):
        config = WorkerConfig.load(path)  # consume: emails + local (memory): emails is the one
    assert config.pipeline == "emails"
    assert config.roadrunner is True
    # username and password go into the URL, percent-encoded; ${VAR:-default} is expanded
    assert config.resolve_url() == "amqp://guest:p%40ss%2Fword@rabbit:5672/"
    assert config.registry == "myapp.jobs:registry"
    assert (config.concurrency, config.prefetch, config.priority) == (8, 10, 10)
    assert (config.exchange, config.routing_key) == ("email-exchange", "email.send")
    assert config.container_id == "roadrunner-amqp1"
    assert config.processes == 10  # jobs.pool.num_workers
    assert config.ignored == (
        "version",
        "rpc",
        "server",
        "amqp1.redial_timeout",
        "jobs.num_pollers",
        "jobs.pipelines.emails.config.exchange_type",
        "jobs.pipelines.emails.config.durable",
    )
    assert "ignored (RoadRunner only)" in caplog.text
    assert config.keys["exchange"] == f"{path}: jobs.pipelines.emails.config.exchange"
    options = config.queue_options(config.resolve_url() or "")
    assert options["wire_format"] == "roadrunner"  # PHP workers share the queue
    assert options["pipeline"] == "emails"  # named in each envelope as RoadRunner does
    assert options["queue"] == "emails"
    assert options["requeue_on_fail"] is True
    assert options["auto_ack"] is False


def test_roadrunner_inline_pipeline_keys_and_the_pipeline_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RR_TEST_HOST", "broker.internal")
    config = WorkerConfig.load(_write(tmp_path, "rr.yaml", RR_YAML), pipeline="files")
    assert (config.pipeline, config.queue, config.prefetch) == ("files", "file-processing", 5)
    assert config.exchange is None
    assert config.resolve_url() == "amqp://guest:p%40ss%2Fword@broker.internal:5672/"


def test_roadrunner_default_exchange_and_service_bus_defaults(tmp_path: Path) -> None:
    text = """
    amqp1:
      addr: "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s"
      tls: {root_ca: /etc/ca.pem, client_auth_type: no_client_certs}
    jobs:
      pipelines:
        azure:
          driver: amqp1
          config: {routing_key: orders, exchange: "", multiple_ack: false}
    """
    config = WorkerConfig.load(_write(tmp_path, "rr.yaml", text))
    # routing_key through the default exchange names the queue; exchange "" is no exchange
    assert (config.queue, config.exchange, config.routing_key) == ("orders", None, None)
    assert config.tls == TLSConfig(root_ca="/etc/ca.pem")
    assert "amqp1.tls.client_auth_type" in config.ignored
    assert "jobs.pipelines.azure.config.multiple_ack" in config.ignored
    # RoadRunner's driver shares Service Bus queues too: its envelope is the default there
    assert config.queue_options(config.resolve_url() or "")["wire_format"] == "roadrunner"


def test_the_amqp1q_section_overrides_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "\n  wire_format: amqp1q\n  url_env: PY_JOBS_URL\n  prefetch: 50"
    text = RR_YAML.replace("  concurrency: 8", "  concurrency: 8" + extra)
    config = WorkerConfig.load(_write(tmp_path, "rr.yaml", text))
    assert config.queue_options("amqp://rabbit")["wire_format"] == "amqp1q"
    assert (config.url, config.url_env, config.prefetch) == (None, "PY_JOBS_URL", 50)
    monkeypatch.setenv("PY_JOBS_URL", "amqp://python-side")
    assert config.resolve_url() == "amqp://python-side"


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "pattern"),
    [
        ("w.toml", "prefetsh = 3\n", r"unknown setting 'prefetsh'; did you mean 'prefetch'\?"),
        ("w.toml", "[retry]\nmax_attempt = 3\n", r"unknown setting 'retry.max_attempt'"),
        ("w.toml", 'prefetch = "10"\n', r"prefetch must be an int >= 1, got '10'"),
        ("w.toml", "prefetch = -1\n", r"prefetch must be an int >= 1, got -1"),
        ("w.toml", "grace = -2\n", r"grace must be a number of seconds >= 0"),
        ("w.toml", "concurrency = true\n", r"concurrency must be an int >= 1"),
        ("w.toml", 'wire_format = "json"\n', r'wire_format must be "amqp1q" or "roadrunner"'),
        ("w.toml", "[retry]\nmax_attempts = 0\n", r"retry: RetryPolicy.max_attempts must be"),
        ("w.toml", "[tls]\ncert = 3\n", r"tls: expected str"),
        ("w.toml", 'url = "a"\nurl_env = "B"\n', r"w.toml: give url or url_env, not both"),
        ("w.toml", "prefetch = \n", r"not valid TOML"),
        ("w.yaml", "queue: [unclosed\n", r"not valid YAML at line 2"),
        ("w.yaml", "- a list\n", r"the file must be a table"),
        ("w.json", "{}", r"unknown file type '.json'"),
        (
            "rr.yaml",
            "jobs:\n  pipelines:\n    p: {driver: amqp1, config: {queue: q, prefech: 1}}\n",
            r"unknown setting 'jobs.pipelines.p.config.prefech'; did you mean 'prefetch'\?",
        ),
        (
            "rr.yaml",
            "jobs:\n  pipelines:\n    p: {driver: amqp1, config: {queue: q, prefetch: -5}}\n",
            r"jobs.pipelines.p.config.prefetch must be an int >= 1, got -5",
        ),
        (
            "rr.yaml",
            "jobs:\n  pipelines:\n    p: {driver: amqp1, config: {queue: q, auto_ack: 'no'}}\n",
            r"jobs.pipelines.p.config.auto_ack must be a bool, got 'no'",
        ),
        ("rr.yaml", "jbos: {}\namqp1: {}\n", r"unknown setting 'jbos'; did you mean 'jobs'\?"),
        ("rr.yaml", "jobs:\n  polers: 1\n", r"unknown setting 'jobs.polers'"),
        ("rr.yaml", "amqp1: {adr: x}\n", r"unknown setting 'amqp1.adr'; did you mean 'addr'\?"),
        ("rr.yaml", "amqp1: {username: u}\n" + PIPELINE, r"username and password need amqp1.addr"),
        (
            "rr.yaml",
            "amqp1: {addr: 'amqp://a:b@h', username: u}\n" + PIPELINE,
            r"amqp1.addr: username/password need an amqp\(s\):// URL without a login",
        ),
        (
            "rr.yaml",
            "jobs:\n  pipelines:\n    p: {driver: memory}\n",
            r"jobs.pipelines has no pipeline with driver: amqp1",
        ),
        (
            "rr.yaml",
            "jobs:\n  pipelines:\n    a: {driver: amqp1, queue: a, addr: 'amqp://x/'}\n"
            "    b: {driver: amqp1, queue: b, addr: 'amqp://y/'}\n",
            r"jobs.pipelines.b: its addr differs from another pipeline's; a worker consumes",
        ),
        ("w.toml", "queues = []\n", r"queues must be a non-empty list"),
        ("w.toml", "queues = [{prefetch = 2}]\n", r"queues\[0\]: no queue"),
        ("w.toml", "queues = [{queue = 'a', prefech = 2}]\n", r"unknown setting 'queues\[0\].pref"),
        ("w.toml", "processes = 0\n", r"processes must be an int >= 1"),
        (
            "rr.yaml",
            "jobs:\n  pipelines:\n    p: {driver: amqp1, config: {prefetch: 1}}\n",
            r"jobs.pipelines.p: no queue",
        ),
        (
            "rr.yaml",
            "jobs:\n  pipelines:\n    p: {driver: amqp1, queue: a, config: {queue: b}}\n",
            r"'queue' is given both inline and under config",
        ),
        (
            "rr.yaml",
            "amqp1: {addr: 'amqp://${NO_SUCH_VAR_AMQP1Q}/'}\n",
            r"amqp1.addr: the environment variable NO_SUCH_VAR_AMQP1Q is unset",
        ),
    ],
)
def test_bad_files_name_the_file_and_the_key(
    tmp_path: Path, name: str, text: str, pattern: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(InvalidSetting, match=pattern) as info:
        WorkerConfig.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert isinstance(info.value, ValueError)


def test_a_missing_pipeline_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "rr.yaml", RR_YAML)
    with pytest.raises(InvalidSetting, match=r"no pipeline 'nope' in jobs.pipelines") as info:
        WorkerConfig.load(path, pipeline="nope")
    assert "['emails', 'files']" in str(info.value)
    with pytest.raises(InvalidSetting, match=r"jobs.pipelines.local.driver is 'memory'"):
        WorkerConfig.load(path, pipeline="local")
    native = _write(tmp_path, "w.toml", 'queue = "q"\n')
    with pytest.raises(InvalidSetting, match=r"w\.toml: pipelines are read from RoadRunner"):
        WorkerConfig.load(native, pipeline="emails")


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidSetting, match=r"nope\.toml: cannot read .*No such file"):
        WorkerConfig.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("url", "broker", "what"),
    [
        ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s", None,
         "Azure Service Bus"),
        ("amqps://k:s@ns.servicebus.windows.net", None, "Azure Service Bus"),
        ("memory://q", None, "a memory:// queue"),
        ("amqp://artemis:5672", "artemis", "the broker 'artemis'"),
    ],
)  # fmt: skip
def test_an_exchange_where_there_are_none_is_refused_naming_the_key(
    tmp_path: Path, url: str, broker: str | None, what: str
) -> None:
    text = "jobs:\n  pipelines:\n    p: {driver: amqp1, config: {queue: q, exchange: x}}\n"
    if broker is not None:
        text += f"amqp1q: {{broker: {broker}}}\n"
    config = WorkerConfig.load(_write(tmp_path, "rr.yaml", text))
    with pytest.raises(UnsupportedFeature) as info:
        config.queue_options(url)
    assert str(info.value).startswith(f"{tmp_path / 'rr.yaml'}: jobs.pipelines.p.config.exchange:")
    assert f"{what} has no exchanges" in str(info.value)
    if broker is None:  # on RabbitMQ (detected at connect) it is kept: /exchange/x/q on 3.x
        assert config.queue_options("amqp://rabbit:5672")["exchange"] == "x"


def test_yaml_without_pyyaml_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    path = _write(tmp_path, "w.yaml", "queue: q\n")
    with pytest.raises(MissingDependency, match=r'pip install "amqp1q\[yaml\]"') as info:
        WorkerConfig.load(path)
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value, ConfigurationError)
    # TOML needs nothing extra
    assert WorkerConfig.load(_write(tmp_path, "w.toml", 'queue = "q"\n')).queue == "q"


# -- secrets ------------------------------------------------------------------------------------


def test_no_secret_in_repr_or_errors(tmp_path: Path) -> None:
    config = WorkerConfig.load(_write(tmp_path, "w.toml", NATIVE_TOML))
    assert SECRET not in repr(config)
    assert "amqp://app:***@rabbit:5672" in repr(config)
    assert SECRET not in str(config.url)
    rr = WorkerConfig.load(_write(tmp_path, "rr.yaml", RR_YAML.replace("p@ss/word", SECRET)))
    assert SECRET not in repr(rr)
    assert SECRET in (rr.resolve_url() or "")
    assert SECRET not in repr(WorkerConfig(url=f"Endpoint=sb://x/;SharedAccessKey={SECRET}"))
    bad = [
        ("a.yaml", f'url: "amqp://u:{SECRET}@h:5672\n'),  # unclosed quote
        ("b.yaml", f"url: [amqp://u:{SECRET}@h]\n"),
        ("c.toml", f'url = "amqp://u:{SECRET}@h"\nurl_env = "X"\n'),
        ("d.yaml", f"amqp1:\n  addr: amqp://h\n  password: [{SECRET}]\n" + PIPELINE),
        ("e.toml", f'url = "amqp://u:{SECRET}@h" oops\n'),
    ]
    for name, text in bad:
        with pytest.raises(ConfigurationError) as info:
            WorkerConfig.load(_write(tmp_path, name, text))
        assert SECRET not in str(info.value), name
        assert SECRET not in repr(info.value), name


# -- the command: flags override the file -------------------------------------------------------


def _captured_serve(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def serve(spec: str, url: str, **kwargs: Any) -> int:
        seen.update(spec=spec, url=url, **kwargs)
        return 0

    monkeypatch.setattr("amqp1q.worker.serve", serve)
    return seen


def test_command_line_flags_override_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AMQP1Q_URL", raising=False)
    seen = _captured_serve(monkeypatch)
    path = _write(tmp_path, "w.toml", NATIVE_TOML)
    assert main(["worker", "--config", str(path)]) == 0
    assert (seen["spec"], seen["url"]) == (
        "myapp.jobs:registry",
        f"amqp://app:{SECRET}@rabbit:5672",
    )
    assert (seen["concurrency"], seen["prefetch"], seen["grace"]) == (16, 32, 10.0)
    assert seen["options"]["queue"] == "emails"

    argv = ["worker", "other.jobs:registry", "--config", str(path), "--url", "amqp://other"]
    argv += ["--queue", "q2", "--concurrency", "2", "--grace", "0", "--wire-format", "amqp1q"]
    assert main(argv) == 0
    assert (seen["spec"], seen["url"]) == ("other.jobs:registry", "amqp://other")
    assert (seen["concurrency"], seen["prefetch"], seen["grace"]) == (2, 32, 0.0)
    assert seen["options"]["queue"] == "q2"
    assert seen["options"]["wire_format"] == "amqp1q"
    assert seen["job_timeout"] == 60.0

    monkeypatch.setenv("AMQP1Q_URL", "amqp://from-env")  # --url's default beats the file
    assert main(["worker", "--config", str(path)]) == 0
    assert seen["url"] == "amqp://from-env"


def test_without_a_file_the_defaults_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _captured_serve(monkeypatch)
    assert main(["worker", "app:registry", "--url", "memory://q"]) == 0
    assert (seen["concurrency"], seen["prefetch"], seen["grace"]) == (32, None, 30.0)
    assert seen["job_timeout"] is None
    assert seen["options"] == {"wire_format": "amqp1q"}


def test_command_errors_exit_2_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AMQP1Q_URL", raising=False)
    seen = _captured_serve(monkeypatch)
    bad = _write(tmp_path, "w.toml", f'url = "amqp://u:{SECRET}@h"\nprefetsh = 1\n')
    assert main(["worker", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown setting 'prefetsh'" in err
    assert SECRET not in err
    assert main(["worker", "app:registry", "--pipeline", "emails", "--url", "memory://q"]) == 2
    assert "--pipeline needs --config" in capsys.readouterr().err
    no_registry = _write(tmp_path, "n.toml", 'url = "memory://q"\n')
    assert main(["worker", "--config", str(no_registry)]) == 2
    assert "give MODULE:ATTR, or registry in the --config file" in capsys.readouterr().err
    assert main(["worker", "app:registry", "--config", str(no_registry.with_name("x.toml"))]) == 2
    assert main(["worker", "app:registry"]) == 2
    assert "give --url, or set AMQP1Q_URL" in capsys.readouterr().err
    assert seen == {}  # serve never ran


def test_the_command_notes_what_it_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AMQP1Q_URL", raising=False)
    seen = _captured_serve(monkeypatch)
    path = _write(tmp_path, ".rr.yaml", RR_YAML)
    argv = ["worker", "--config", str(path), "--pipeline", "emails", "--processes", "1"]
    assert main(argv) == 0  # (one process: the file's jobs.pool.num_workers is 10)
    assert "ignored (RoadRunner only): version, rpc, server" in capsys.readouterr().err
    assert seen["options"]["wire_format"] == "roadrunner"
    assert seen["prefetch"] == 10


def test_the_stall_warning_comes_from_the_file_or_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _captured_serve(monkeypatch)
    assert main(["worker", "app:registry", "--url", "memory://q"]) == 0
    assert seen["stall_warning"] == 0.5
    path = _write(tmp_path, "w.toml", 'registry = "app:registry"\nstall_warning = 2.5\n')
    assert WorkerConfig.load(path).stall_warning == 2.5
    assert main(["worker", "--config", str(path), "--url", "memory://q"]) == 0
    assert seen["stall_warning"] == 2.5
    argv = ["worker", "--config", str(path), "--url", "memory://q", "--stall-warning", "0"]
    assert main(argv) == 0
    assert seen["stall_warning"] == 0.0  # off
    bad = _write(tmp_path, "b.toml", 'registry = "app:registry"\nstall_warning = -1\n')
    assert main(["worker", "--config", str(bad), "--url", "memory://q"]) == 2
    assert "stall_warning must be a number of seconds >= 0" in capsys.readouterr().err

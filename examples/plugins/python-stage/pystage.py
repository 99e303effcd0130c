"""ferry-stage-pystage: a Ferry stage plugin in Python.

Like examples/plugins/go-stage, it decides each message's fate by its
"x-stage" header: none or "pass" passes it on (with config {"upper": true}
the ASCII letters of its body upper-cased), "retry" retries it after
retry_delay_ms (default 100), "dlq" dead-letters it, "drop" drops it. With
{"tag_batch": true} a passed message gets the header x-stage-batch: the
number of deliveries of the call it came in (the flow's max_batch and
linger make the calls). It
speaks the wire contract of docs/plugins.md ("Stage plugins", "The wire
contract") with nothing but Debian's python3-grpcio and python3-protobuf:
the go-plugin handshake, ferry.v1.Plugin, ferry.v1.Stage,
plugin.GRPCController and grpc.health.v1.Health served with grpc's generic
handlers from the message modules in gen/ (gen.sh makes them), hclog JSON
logs on stderr, exit when the host ($FERRY_HOST_PID) is gone.

Test it with: ferry plugin test stage ./ferry-stage-pystage
"""

import json
import os
import sys
import tempfile
import threading
from concurrent import futures
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402

import grpc_controller_pb2  # noqa: E402
import health_pb2  # noqa: E402
from ferry.v1 import message_pb2, plugin_pb2, stage_pb2  # noqa: E402

COOKIE_KEY = "FERRY_PLUGIN_COOKIE"
COOKIE_VALUE = "ferry-plugin-5b1c0e2a"
PROTOCOL_VERSION = 1
KEYS = {"upper": bool, "retry_delay_ms": int, "tag_batch": bool}


def log(level, message, **fields):
    """One hclog JSON line on stderr, which the host logs as the plugin's."""
    line = {
        "@level": level,
        "@message": message,
        "@timestamp": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
    }
    line.update(fields)
    sys.stderr.write(json.dumps(line) + "\n")
    sys.stderr.flush()


def decode(config_json):
    """The config and its problems, each with its key path."""
    config = {"upper": False, "retry_delay_ms": 100, "tag_batch": False}
    try:
        raw = json.loads(config_json or b"{}")
    except ValueError as e:
        return config, [message_pb2.Problem(path="", message="not JSON: %s" % e)]
    if raw is None:
        return config, []
    if not isinstance(raw, dict):
        return config, [message_pb2.Problem(path="", message="must be a mapping")]
    problems = []
    for k in sorted(raw):
        v = raw[k]
        if k not in KEYS:
            problems.append(message_pb2.Problem(path=k, message="unknown key (valid keys: %s)" % ", ".join(sorted(KEYS))))
        elif v is None:
            continue
        elif type(v) is not KEYS[k]:
            problems.append(message_pb2.Problem(path=k, message="must be %s, got %s" % (KEYS[k].__name__, json.dumps(v))))
        elif k == "retry_delay_ms" and v < 0:
            problems.append(message_pb2.Problem(path=k, message="must be 0 or more, got %d" % v))
        else:
            config[k] = v
    return config, problems


def upper_ascii(body):
    return bytes(c - 32 if 97 <= c <= 122 else c for c in body)


class Stage:
    def __init__(self):
        self.config = {"upper": False, "retry_delay_ms": 100, "tag_batch": False}

    # ferry.v1.Plugin

    def Validate(self, request, context):
        return plugin_pb2.ValidateResponse(problems=decode(request.config_json)[1])

    def Configure(self, request, context):
        config, ps = decode(request.config_json)
        if ps:
            detail = "; ".join("%s: %s" % (p.path, p.message) if p.path else p.message for p in ps)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "CONFIG: " + detail)
        self.config = config
        log("info", "configured", node=request.env.node)
        return plugin_pb2.ConfigureResponse()  # no data plane: gRPC only

    def Health(self, request, context):
        return plugin_pb2.HealthResponse(ok=True)

    # ferry.v1.Stage

    def Process(self, request, context):
        resp = stage_pb2.ProcessResponse()
        for d in request.deliveries:
            action = d.message.headers.get("x-stage", "pass")
            v = resp.verdicts.add(id=d.id)
            if action == "pass":
                passed = getattr(v, "pass")  # "pass" is a Python keyword
                m = d.message
                if self.config["upper"] or self.config["tag_batch"]:
                    out = message_pb2.Message(key=m.key, headers=m.headers, body=m.body)
                    if self.config["upper"]:
                        out.body = upper_ascii(m.body)
                    if self.config["tag_batch"]:
                        out.headers["x-stage-batch"] = str(len(request.deliveries))
                    passed.message.CopyFrom(out)
                else:
                    passed.SetInParent()
            elif action == "retry":
                v.retry.delay_ms = self.config["retry_delay_ms"]
                v.retry.reason = "x-stage asked for it"
            elif action == "dlq":
                v.dead_letter.reason = "x-stage asked for it"
            elif action == "drop":
                v.drop.SetInParent()
            else:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "INVALID_ARGUMENT: delivery %d: unknown x-stage header %r (pass, retry, dlq or drop)" % (d.id, action),
                )
        return resp


def unary(fn, req_type, resp_type):
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=req_type.FromString, response_serializer=resp_type.SerializeToString
    )


def watch_host(pid, done):
    """Ends the plugin once the host process is gone (FERRY_HOST_PID)."""
    while not done.wait(0.5):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            log("info", "host is gone; exiting", host_pid=pid)
            done.set()
        except PermissionError:
            pass  # alive, someone else's


def main():
    if os.environ.get(COOKIE_KEY) != COOKIE_VALUE:
        sys.stderr.write("This is a Ferry plugin: the Ferry plugin host starts it, not a person.\n")
        return 1
    versions = os.environ.get("PLUGIN_PROTOCOL_VERSIONS", str(PROTOCOL_VERSION)).split(",")
    if str(PROTOCOL_VERSION) not in versions:
        sys.stderr.write("the host speaks protocol versions %s; this plugin speaks %d\n" % (versions, PROTOCOL_VERSION))
        return 1

    stage = Stage()
    done = threading.Event()

    def shutdown(request, context):
        log("info", "shutdown asked by the host")
        done.set()
        return grpc_controller_pb2.Empty()

    def health_check(request, context):
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "ferry.v1.Plugin",
                {
                    "Validate": unary(stage.Validate, plugin_pb2.ValidateRequest, plugin_pb2.ValidateResponse),
                    "Configure": unary(stage.Configure, plugin_pb2.ConfigureRequest, plugin_pb2.ConfigureResponse),
                    "Health": unary(stage.Health, plugin_pb2.HealthRequest, plugin_pb2.HealthResponse),
                },
            ),
            grpc.method_handlers_generic_handler(
                "ferry.v1.Stage",
                {"Process": unary(stage.Process, stage_pb2.ProcessRequest, stage_pb2.ProcessResponse)},
            ),
            grpc.method_handlers_generic_handler(
                "plugin.GRPCController",
                {"Shutdown": unary(shutdown, grpc_controller_pb2.Empty, grpc_controller_pb2.Empty)},
            ),
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {"Check": unary(health_check, health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)},
            ),
        )
    )
    sock_dir = os.environ.get("PLUGIN_UNIX_SOCKET_DIR") or tempfile.gettempdir()
    path = os.path.join(sock_dir, "pystage-%d.sock" % os.getpid())
    if server.add_insecure_port("unix:" + path) == 0:
        sys.stderr.write("cannot listen on unix socket %s\n" % path)
        return 1
    server.start()
    sys.stdout.write("1|%d|unix|%s|grpc\n" % (PROTOCOL_VERSION, path))
    sys.stdout.flush()
    log("info", "serving", socket=path)

    host = os.environ.get("FERRY_HOST_PID")
    if host and host.isdigit():
        threading.Thread(target=watch_host, args=(int(host), done), daemon=True).start()
    done.wait()
    server.stop(grace=1).wait()
    try:
        os.unlink(path)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

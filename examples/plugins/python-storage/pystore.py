"""ferry-storage-pystore: a Ferry storage plugin in Python.

It keeps every queue in memory, as examples/plugins/go-storage does in Go, and
speaks the wire contract of docs/plugins.md ("The wire contract") with nothing
but Debian's python3-grpcio and python3-protobuf:

  - the go-plugin handshake: a unix socket in $PLUGIN_UNIX_SOCKET_DIR and the
    line 1|1|unix|PATH|grpc on stdout;
  - the gRPC services ferry.v1.Plugin, ferry.v1.Storage,
    plugin.GRPCController (Shutdown) and grpc.health.v1.Health, served with
    grpc's generic handlers from the message modules in gen/ (gen.sh makes
    them with protoc);
  - errors as the SDK's names: "NAME: detail" in a unary call's status
    message, Error{code: NAME} in a stream's answer;
  - logs on stderr as hclog JSON; exit when the host ($FERRY_HOST_PID) is gone.

It ignores the shared-memory ring offer at Configure, so the host serves it
over gRPC. Test it with: ferry plugin test storage ./ferry-storage-pystore
"""

import json
import os
import sys
import tempfile
import threading
import time
from concurrent import futures
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402

import grpc_controller_pb2  # noqa: E402
import health_pb2  # noqa: E402
from ferry.v1 import message_pb2, plugin_pb2, storage_pb2  # noqa: E402

COOKIE_KEY = "FERRY_PLUGIN_COOKIE"
COOKIE_VALUE = "ferry-plugin-5b1c0e2a"
PROTOCOL_VERSION = 1
# Ids de-duplicate per queue over at least this many recent ids (sdk.DedupWindow).
DEDUP_WINDOW = 10000


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


class FerryError(Exception):
    """An error with the SDK's wire name (core/sdk/errors.go)."""

    # The gRPC code of each name, as the Go SDK sends it.
    CODES = {
        "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
        "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
        "NOT_CONFIGURED": grpc.StatusCode.FAILED_PRECONDITION,
        "CONFIG": grpc.StatusCode.INVALID_ARGUMENT,
        "CLOSED": grpc.StatusCode.UNAVAILABLE,
    }

    def __init__(self, name, detail):
        super().__init__(detail)
        self.name = name
        self.detail = detail

    def to_proto(self):
        return message_pb2.Error(code=self.name, message=self.detail)

    def abort(self, context):
        context.abort(self.CODES[self.name], self.name + ": " + self.detail)


def check_queue(topic, queue):
    if topic == "" or queue < 0:
        raise FerryError("INVALID_ARGUMENT", "topic %r queue %d" % (topic, queue))


class Queue:
    def __init__(self):
        self.messages = []
        self.ids = {}  # the de-dup window: id -> offset
        self.order = []  # ids in the window, oldest first


class Store:
    """The plugin: every queue in memory, one lock over all of them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.configured = False
        self.queues = {}
        self.committed = {}  # group -> {(topic, queue): offset}

    # ferry.v1.Plugin

    @staticmethod
    def problems(config_json):
        """The config's problems; this store has no settings, so any key is one."""
        try:
            config = json.loads(config_json or b"{}")
        except ValueError as e:
            return [message_pb2.Problem(path="", message="not JSON: %s" % e)]
        if config is None:
            return []
        if not isinstance(config, dict):
            return [message_pb2.Problem(path="", message="must be a mapping")]
        return [message_pb2.Problem(path=k, message="unknown key") for k in sorted(config)]

    def Validate(self, request, context):
        return plugin_pb2.ValidateResponse(problems=self.problems(request.config_json))

    def Configure(self, request, context):
        ps = self.problems(request.config_json)
        if ps:
            detail = "; ".join("%s: %s" % (p.path, p.message) if p.path else p.message for p in ps)
            FerryError("CONFIG", detail).abort(context)
        with self.lock:
            self.configured = True
            self.queues = {}
            self.committed = {}
        log("info", "configured", node=request.env.node, ring_offer=request.data_plane)
        # data_plane stays empty: this plugin is served over gRPC.
        return plugin_pb2.ConfigureResponse()

    def Health(self, request, context):
        return plugin_pb2.HealthResponse(ok=True)

    # ferry.v1.Storage

    def _append(self, messages):
        with self.lock:
            if not self.configured:
                raise FerryError("NOT_CONFIGURED", "append before Configure")
            for m in messages:  # all or nothing
                check_queue(m.topic, m.queue)
            now = time.time_ns()
            offsets = []
            for m in messages:
                q = self.queues.setdefault((m.topic, m.queue), Queue())
                if m.id and m.id in q.ids:
                    offsets.append(q.ids[m.id])
                    continue
                m.offset = len(q.messages)
                m.stored_unix_nano = now
                q.messages.append(m)
                offsets.append(m.offset)
                if m.id:
                    q.ids[m.id] = m.offset
                    q.order.append(m.id)
                    if len(q.order) > DEDUP_WINDOW:
                        del q.ids[q.order.pop(0)]
            return offsets

    def Append(self, requests, context):
        # Each batch is stored at once (memory is this store's durability),
        # so the answer is final and comes in order; want_written is ignored.
        for req in requests:
            try:
                offsets = self._append(req.messages)
            except FerryError as e:
                yield storage_pb2.AppendResponse(seq=req.seq, error=e.to_proto())
                continue
            yield storage_pb2.AppendResponse(seq=req.seq, offsets=offsets, status=message_pb2.STATUS_OK)

    def _read(self, req):
        with self.lock:
            if not self.configured:
                raise FerryError("NOT_CONFIGURED", "read before Configure")
            check_queue(req.topic, req.queue)
            q = self.queues.get((req.topic, req.queue))
            stored = q.messages if q else []
            resp = storage_pb2.ReadResponse(id=req.id)
            resp.offsets.CopyFrom(
                storage_pb2.QueueOffsets(topic=req.topic, queue=req.queue, start=0, end=len(stored), committed=-1)
            )
            size = 0
            for m in stored[max(req.offset, 0) : max(req.offset, 0) + max(req.max_messages, 1)]:
                size += len(m.body)
                if len(resp.messages) > 0 and req.max_bytes > 0 and size > req.max_bytes:
                    break
                resp.messages.append(m)
            return resp

    def Read(self, requests, context):
        for req in requests:
            try:
                yield self._read(req)
            except FerryError as e:
                yield storage_pb2.ReadResponse(id=req.id, error=e.to_proto())

    def CommitOffsets(self, request, context):
        try:
            with self.lock:
                if not self.configured:
                    raise FerryError("NOT_CONFIGURED", "commit before Configure")
                if request.group == "":
                    raise FerryError("INVALID_ARGUMENT", "empty group")
                for o in request.offsets:
                    check_queue(o.topic, o.queue)
                group = self.committed.setdefault(request.group, {})
                for o in request.offsets:
                    group[(o.topic, o.queue)] = o.offset
        except FerryError as e:
            e.abort(context)
        return storage_pb2.CommitOffsetsResponse()

    def GetOffsets(self, request, context):
        with self.lock:
            if not self.configured:
                FerryError("NOT_CONFIGURED", "offsets before Configure").abort(context)
            group = self.committed.get(request.group, {})
            out = storage_pb2.GetOffsetsResponse()
            for r in request.queues:
                q = self.queues.get((r.topic, r.queue))
                out.offsets.append(
                    storage_pb2.QueueOffsets(
                        topic=r.topic,
                        queue=r.queue,
                        start=0,
                        end=len(q.messages) if q else 0,
                        committed=group.get((r.topic, r.queue), -1),
                    )
                )
            return out


def unary(fn, req_type, resp_type):
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=req_type.FromString, response_serializer=resp_type.SerializeToString
    )


def stream(fn, req_type, resp_type):
    return grpc.stream_stream_rpc_method_handler(
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

    store = Store()
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
                    "Validate": unary(store.Validate, plugin_pb2.ValidateRequest, plugin_pb2.ValidateResponse),
                    "Configure": unary(store.Configure, plugin_pb2.ConfigureRequest, plugin_pb2.ConfigureResponse),
                    "Health": unary(store.Health, plugin_pb2.HealthRequest, plugin_pb2.HealthResponse),
                },
            ),
            grpc.method_handlers_generic_handler(
                "ferry.v1.Storage",
                {
                    "Append": stream(store.Append, storage_pb2.AppendRequest, storage_pb2.AppendResponse),
                    "Read": stream(store.Read, storage_pb2.ReadRequest, storage_pb2.ReadResponse),
                    "CommitOffsets": unary(
                        store.CommitOffsets, storage_pb2.CommitOffsetsRequest, storage_pb2.CommitOffsetsResponse
                    ),
                    "GetOffsets": unary(store.GetOffsets, storage_pb2.GetOffsetsRequest, storage_pb2.GetOffsetsResponse),
                },
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
    path = os.path.join(sock_dir, "pystore-%d.sock" % os.getpid())
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
    # Let the Shutdown answer leave before the socket closes.
    server.stop(grace=1).wait()
    try:
        os.unlink(path)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

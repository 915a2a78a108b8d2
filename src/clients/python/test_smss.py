"""Tests of smss.py against the real server (stdlib unittest only).

Run by tests/python_client.rs (`cargo test --test python_client`, part of
`make test`), which starts the server and passes:

* SMSS_ADDR — host:port of a server started for this suite (with
  `timeout.server.alive: 200` and `limits.maxPayload: 65536`);
* SMSS_BIN — the `smss` binary, for the tests that need servers of their own
  (auth, restarts, kill -9, a slave). Each one runs on port 0 in a temporary
  data directory and is stopped by its PID.
* SMSS_TLS_ADDR, SMSS_TLS_CA — the same server's TLS port and the CA file
  that signed its certificate (the TLS tests are skipped without them).

By hand: `SMSS_BIN=target/debug/smss python3 -m unittest src/clients/python/test_smss.py`
(without SMSS_ADDR the suite starts its shared server itself).

Also the worker process of the consumer-group takeover test:
`python3 test_smss.py worker <addr> <topic> <group> <mode>`.
"""

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smss  # noqa: E402

# Longest a test waits for anything that should happen promptly.
WAIT = 20.0
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


def smss_bin():
    path = os.environ.get("SMSS_BIN") or os.path.join(ROOT, "target", "debug", "smss")
    if not os.path.exists(path):
        raise unittest.SkipTest("no smss binary at %s (set SMSS_BIN)" % path)
    return path


class Server:
    """A real smss on its own port and temp data directory; stopped by PID."""

    def __init__(self, extra="", port=0, args=(), dir=None):
        self.dir = dir or tempfile.mkdtemp(prefix="smss-py-")
        self.extra = extra
        self.args = list(args)
        self.proc = None
        self.addr = None
        self.start(port)

    def start(self, port=0):
        config = os.path.join(self.dir, "config.yaml")
        with open(config, "w") as f:
            f.write("port: %d\nbind: 127.0.0.1\nhttp:\n  enabled: false\n"
                    "log:\n  path: %s\n  level: info\nstore:\n  path: %s\n%s\n"
                    % (port, os.path.join(self.dir, "smss.log"), os.path.join(self.dir, "data"),
                       self.extra))
        os.chmod(config, 0o600)  # it may hold auth.token
        self.proc = subprocess.Popen([smss_bin(), "--config", config] + self.args,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        lines = queue.Queue()

        def pump(out):
            for raw in iter(out.readline, b""):
                lines.put(raw.decode("utf-8", "replace").strip())

        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError("smss did not print READY: %s" % self.log()[-2000:])
            if line.startswith("READY "):
                self.addr = line.split(" ", 1)[1]
                return

    @property
    def port(self):
        return int(self.addr.rsplit(":", 1)[1])

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(timeout=WAIT)
                self.proc.stdout.close()

    def restart(self):
        self.kill(signal.SIGTERM)
        self.start(self.port)

    def log(self):
        try:
            with open(os.path.join(self.dir, "smss.log")) as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process cannot exit
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


_shared = None


def shared_addr():
    global _shared
    addr = os.environ.get("SMSS_ADDR")
    if addr:
        return addr
    if _shared is None:
        _shared = Server("timeout:\n  server:\n    alive: 200\nlimits:\n  maxPayload: 65536\n")
    return _shared.addr


def tearDownModule():
    if _shared is not None:
        _shared.close()


def topic_name(prefix="t"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def client(addr=None, **kw):
    kw.setdefault("timeout", WAIT)
    kw.setdefault("reconnect_timeout", WAIT)
    return smss.Client(addr or shared_addr(), **kw)


def next_batch(sub):
    """The next batch, in a thread-free bounded way: the subscription's
    liveness bounds each read, and a test's topic always has what it waits for."""
    return next(iter(sub))


def wait_until(what, check, limit=WAIT):
    """Polls `check` (there is no signal to wait on) within `limit`."""
    deadline = time.monotonic() + limit
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


class Lines:
    """The stdout of a child process, line by line, with a timeout."""

    def __init__(self, proc):
        self.q = queue.Queue()
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, out):
        for raw in iter(out.readline, b""):
            self.q.put(raw.decode().strip())
        self.q.put(None)

    def next(self):
        try:
            line = self.q.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("no line from the worker within %ss" % WAIT)
        if line is None:
            raise AssertionError("the worker exited")
        return line


class Commands(unittest.TestCase):
    def setUp(self):
        self.c = client()
        self.t = topic_name()

    def tearDown(self):
        self.c.close()

    def test_ping_create_info_list_delete(self):
        self.c.ping()
        eid = self.c.create(self.t)
        self.assertGreater(eid, 0)
        info = self.c.info(self.t)
        self.assertEqual((info.name, info.expires_ms, info.messages, info.first_id), (self.t, 0, 0, 0))
        self.assertIn(self.t, [t.name for t in self.c.list()])
        names = [t.name for t in self.c.list()]
        self.assertEqual(names, sorted(names))
        self.assertGreater(self.c.delete(self.t), eid)
        with self.assertRaises(smss.NoTopic):
            self.c.info(self.t)

    def test_create_with_lifetime(self):
        self.c.create(self.t, 60000)
        info = self.c.info(self.t)
        self.assertEqual(info.expires_ms, info.created_ms + 60000)

    def test_publish_headers_round_trip(self):
        self.c.create(self.t)
        headers = {"kind": "greeting", "trace.id": "a=b=c", "empty": "", "n": 7}
        payload = b"hello\r\nworld\x00" + bytes(range(256))
        eid = self.c.publish(self.t, payload, headers)
        self.c.publish(self.t, "text payload")
        with self.c.subscribe(self.t, 0, batch=10) as sub:
            batch = next_batch(sub)
            self.assertEqual(len(batch), 2)
            m = batch[0]
            self.assertEqual(m.event_id, eid)
            self.assertEqual(m.payload, payload)
            self.assertEqual(m.headers, {"kind": "greeting", "trace.id": "a=b=c", "empty": "", "n": "7"})
            self.assertEqual(list(m.headers), ["kind", "trace.id", "empty", "n"])
            self.assertAlmostEqual(m.timestamp_ms / 1000, time.time(), delta=60)
            self.assertEqual(batch[1].payload, b"text payload")
            self.assertEqual(batch[1].headers, {})

    def test_arguments_checked_before_sending(self):
        self.c.create(self.t)
        bad = [
            lambda: self.c.create("bad name"),
            lambda: self.c.create("x" * 129),
            lambda: self.c.create(self.t + "2", 999),
            lambda: self.c.publish(self.t, b"x", {"bad key": "v"}),
            lambda: self.c.publish(self.t, b"x", {"k" * 65: "v"}),
            lambda: self.c.publish(self.t, b"x", {"k": "has space"}),
            lambda: self.c.publish(self.t, b"x", {"k": "\u00e9"}),
            lambda: self.c.publish(self.t, b"x", {"k": "v" * 1025}),
            lambda: self.c.publish(self.t, b"x", {"k%d" % i: "v" for i in range(33)}),
            lambda: self.c.publish(self.t, b"x", {"k%d" % i: "v" * 1000 for i in range(5)}),
            lambda: self.c.publish_delayed(self.t, b"x", 0),
            lambda: self.c.subscribe(self.t, -1),
            lambda: self.c.subscribe(self.t, "-"),
        ]
        for f in bad:
            with self.assertRaises(smss.InvalidArgument):
                f()
        # Nothing reached the server, and the connection is still in step.
        self.assertEqual(self.c.info(self.t).messages, 0)
        self.c.publish(self.t, b"x", {"k": "v" * 1024})
        self.assertEqual(self.c.info(self.t).messages, 1)

    def test_keyed_publish_reports_dup(self):
        c = client()
        t = topic_name()
        c.create(t)
        a = c.publish(t, b"x", key="k1")
        self.assertFalse(a.dup)
        b = c.publish(t, b"x", key="k1")
        self.assertEqual((b, b.dup), (a, True))
        d = c.publish_delayed(t, b"x", 60000, key="d1")
        self.assertTrue(c.publish_delayed(t, b"x", 60000, key="d1").dup)
        self.assertEqual(c.publish_delayed(t, b"x", 60000, key="d1"), d)
        batch = [(b"1", None, "m1"), (b"2", {"h": "v"}, "m2")]
        ids = c.publish_batch(t, batch)
        self.assertFalse(ids.dup)
        again = c.publish_batch(t, batch)
        self.assertEqual((list(again), again.dup), (list(ids), True))
        with self.assertRaises(smss.BadRequest):
            c.publish_batch(t, [(b"1", None, "m2"), (b"2", None, "new")])
        many = [(str(i).encode(), None, "many-%d" % i) for i in range(10)]
        first = c.publish_many(t, many, chunk_count=3)
        self.assertEqual(c.publish_many(t, many, chunk_count=3), first)
        self.assertEqual(c.info(t).messages, 1 + 2 + 10)
        for bad in ("", "a b", "x" * 129):
            with self.assertRaises(smss.InvalidArgument):
                c.publish(t, b"x", key=bad)
        with self.assertRaises(smss.InvalidArgument):
            c.publish(t, b"x", {"msgid": "a"}, key="b")
        self.assertGreaterEqual(c.stats()["dedup_duplicates"], 4)
        c.close()

    def test_mpub_ids_consecutive(self):
        self.c.create(self.t)
        ids = self.c.publish_batch(self.t, [b"a", (b"b", {"h": "1"}), ("c", None)])
        self.assertEqual(len(ids), 3)
        self.assertEqual(ids, list(range(ids[0], ids[0] + 3)))
        with self.c.subscribe(self.t, 0) as sub:
            batch = next_batch(sub)
            self.assertEqual([(m.event_id, m.payload) for m in batch],
                             list(zip(ids, [b"a", b"b", b"c"])))
            self.assertEqual(batch[1].headers, {"h": "1"})

    def test_publish_many_pipelines_chunks(self):
        self.c.create(self.t)
        msgs = [(b"m%d" % i, {"i": i}) for i in range(250)]
        ids = self.c.publish_many(self.t, msgs, chunk_count=40, window=3)
        self.assertEqual(len(ids), 250)
        self.assertEqual(ids, sorted(ids))
        info = self.c.info(self.t)
        self.assertEqual((info.messages, info.first_id, info.last_id), (250, ids[0], ids[-1]))
        got = []
        with self.c.subscribe(self.t, 0, batch=1000) as sub:
            for batch in sub:
                got.extend((m.event_id, m.payload, m.headers["i"]) for m in batch)
                if len(got) >= 250:
                    break
        self.assertEqual(got, [(ids[i], b"m%d" % i, str(i)) for i in range(250)])

    def test_publish_many_reports_a_failed_chunk(self):
        # A chunk whose payloads pass limits.maxPayload fails; the others are written.
        self.c.create(self.t)
        msgs = [b"a", b"b", b"x" * 70000, b"c"]
        with self.assertRaises(smss.TooBig) as cm:
            self.c.publish_many(self.t, msgs, chunk_count=2)
        self.assertEqual(cm.exception.failed_index, 2)
        self.assertEqual(len(cm.exception.done_ids), 2)
        self.assertEqual(self.c.info(self.t).messages, 2)

    def test_dpub_arrives_when_due(self):
        self.c.create(self.t)
        with self.c.subscribe(self.t, "$") as sub:
            sent = time.monotonic()
            did = self.c.publish_delayed(self.t, b"later", 300, {"d": "1"})
            self.assertEqual(self.c.info(self.t).messages, 0)
            batch = next_batch(sub)
            elapsed = time.monotonic() - sent
        self.assertGreaterEqual(elapsed, 0.29)
        self.assertEqual(batch[0].payload, b"later")
        self.assertEqual(batch[0].headers, {"d": "1"})
        self.assertGreater(batch[0].event_id, did)

    def test_stats_role_slaves(self):
        stats = self.c.stats()
        for k in ("role", "last_event_id", "topics", "connections", "uptime_ms", "epoch", "groups"):
            self.assertIn(k, stats)
        self.assertEqual(stats["role"], "master")
        self.assertIsInstance(stats["last_event_id"], int)
        role = self.c.role()
        self.assertEqual(role.role, "master")
        self.assertEqual(len(role.history), 16)
        self.assertEqual(stats["history"], role.history)
        self.assertGreaterEqual(role.last_event_id, stats["last_event_id"])
        self.assertEqual(self.c.slaves(), [])
        with self.assertRaises(smss.BadRequest):
            self.c.promote()  # a master already

    def test_err_codes_map_to_exceptions(self):
        self.c.create(self.t)
        with self.assertRaises(smss.Exists) as cm:
            self.c.create(self.t)
        self.assertEqual(cm.exception.code, "EXISTS")
        with self.assertRaises(smss.NoTopic):
            self.c.publish(topic_name("missing"), b"x")
        with self.assertRaises(smss.NoTopic):
            self.c.subscribe(topic_name("missing"), 0)
        with self.assertRaises(smss.UnknownCommand):
            self.c.command("FROB")
        with self.assertRaises(smss.BadRequest):
            self.c.command("ACK")
        with self.assertRaises(smss.BadRequest):
            self.c.group_delete(self.t, "nogroup")
        with self.assertRaises(smss.TooBig):
            self.c.publish(self.t, b"x" * 70000)
        # The server closed that connection; the next command reconnects.
        self.assertEqual(self.c.info(self.t).messages, 0)
        # The codes a single server cannot be made to send here.
        for code, cls in [("INTERNAL", smss.Internal), ("NOSLAVE", smss.NoSlave),
                          ("READONLY", smss.ReadOnly), ("BUSY", smss.Busy),
                          ("NOAUTH", smss.NoAuth), ("NEWCODE", smss.ServerError)]:
            e = smss.error_from_line("ERR %s some text" % code)
            self.assertIs(type(e), cls)
            self.assertEqual((e.code, e.text), (code, "some text"))
            self.assertIsInstance(e, smss.SmssError)


class WithTopic(unittest.TestCase):
    """A client and a fresh topic per test."""

    def setUp(self):
        self.c = client()
        self.t = topic_name()
        self.c.create(self.t)

    def tearDown(self):
        self.c.close()


class Subscriptions(WithTopic):

    def test_batches_ack_and_stop(self):
        ids = self.c.publish_batch(self.t, [b"%d" % i for i in range(5)])
        sub = self.c.subscribe(self.t, 0, batch=2, ack_ms=5000)
        b1 = next_batch(sub)
        self.assertEqual([m.event_id for m in b1], ids[:2])
        b1.ack()
        b1.ack()  # idempotent
        b2 = next_batch(sub)
        self.assertEqual([m.event_id for m in b2], ids[2:4])
        # Not acknowledging the batch and stopping: the subscription ends cleanly.
        sub.stop()
        self.assertEqual(sub.end_reason, "stopped")
        self.assertEqual(sub.last_acked_id, ids[1])
        self.assertEqual(list(sub), [])
        # From the last acknowledged id, the unacknowledged batch comes again.
        with self.c.subscribe(self.t, sub.last_acked_id, batch=10) as again:
            self.assertEqual([m.event_id for m in next_batch(again)], ids[2:])

    def test_next_batch_acknowledges_the_previous_one(self):
        ids = self.c.publish_batch(self.t, [b"a", b"b", b"c"])
        got = []
        with self.c.subscribe(self.t, 0, batch=1) as sub:
            for batch in sub:
                got.append(batch[0].event_id)
                if len(got) == 3:
                    break
        self.assertEqual(got, ids)

    def test_stop_from_another_thread_while_waiting(self):
        sub = self.c.subscribe(self.t, "$", liveness=5)
        threading.Timer(0.2, sub.stop).start()
        self.assertEqual(list(sub), [])
        self.assertEqual(sub.end_reason, "stopped")
        # ALIVE (every 200 ms) did not end it: it lasted until the stop.

    def test_end_on_topic_delete(self):
        self.c.publish(self.t, b"x")
        sub = self.c.subscribe(self.t, 0, liveness=5)
        next_batch(sub).ack()
        self.c.delete(self.t)
        self.assertEqual(list(sub), [])
        self.assertEqual(sub.end_reason, "deleted")

    def test_end_on_topic_expiry(self):
        t = topic_name("life")
        self.c.create(t, 1000)
        sub = self.c.subscribe(t, 0, liveness=5)
        self.assertEqual(list(sub), [])
        self.assertEqual(sub.end_reason, "expired")

    def test_dollar_then_new_messages(self):
        self.c.publish(self.t, b"old")
        with self.c.subscribe(self.t, "$") as sub:
            eid = self.c.publish(self.t, b"new")
            batch = next_batch(sub)
            self.assertEqual([(m.event_id, m.payload) for m in batch], [(eid, b"new")])


class Groups(WithTopic):

    def test_group_position_groups_and_groupdel(self):
        ids = self.c.publish_batch(self.t, [b"1", b"2", b"3"])
        with self.c.subscribe(self.t, group="g", batch=2) as sub:
            b = next_batch(sub)
            self.assertEqual([m.event_id for m in b], ids[:2])
            b.ack()
            next_batch(sub)  # batch 2 is out: the ACK of batch 1 is committed
        [g] = self.c.groups(self.t)
        self.assertEqual((g.name, g.committed_id, g.active, g.standby_count, g.lag),
                         ("g", ids[1], False, 0, 1))
        with self.c.subscribe(self.t, group="g") as sub:
            b = next_batch(sub)
            self.assertEqual([m.event_id for m in b], ids[2:])
            b.ack()
        # STOP right after the ACK: the commit settles, whichever comes first.
        wait_until("the commit", lambda: self.c.groups(self.t)[0].committed_id == ids[2])
        sub = self.c.subscribe(self.t, "-", group="g", liveness=5)
        self.c.group_delete(self.t, "g")
        self.assertEqual(list(sub), [])
        self.assertEqual(sub.end_reason, "deleted")
        self.assertEqual(self.c.groups(self.t), [])

    def test_shared_members_get_batches_at_the_same_time(self):
        ids = self.c.publish_batch(self.t, [b"1", b"2", b"3", b"4"])
        a = self.c.subscribe(self.t, group="pool", batch=2, mode="shared")
        b = self.c.subscribe(self.t, group="pool", batch=2, mode="shared")
        # Both hold a batch unacknowledged at once: impossible in exclusive mode.
        got_a, got_b = next_batch(a), next_batch(b)
        self.assertEqual(sorted(m.event_id for m in got_a + got_b), ids)
        [g] = self.c.groups(self.t)
        self.assertEqual(g.shared, (2, 4))
        # The other mode is refused while the group has members.
        with self.assertRaises(smss.BadRequest):
            self.c.subscribe(self.t, group="pool")
        with self.assertRaises(smss.InvalidArgument):
            self.c.subscribe(self.t, group="pool", mode="fanout")
        with self.assertRaises(smss.InvalidArgument):
            self.c.subscribe(self.t, mode="shared")
        got_a.ack()
        got_b.ack()
        a.stop()
        b.stop()
        wait_until("the watermark", lambda: self.c.groups(self.t)[0].committed_id == ids[-1])

    def test_a_worker_pool_splits_the_messages_and_redelivers_a_failed_batch(self):
        ids = self.c.publish_many(self.t, [(b"m%d" % i, None) for i in range(60)])
        workers = 3
        # Every worker's first message waits until all three hold a batch:
        # only members of a shared group can hold batches at the same time.
        all_in = threading.Barrier(workers, timeout=WAIT)
        seen = {}
        lock = threading.Lock()
        failed_once = []

        def handle(m):
            me = threading.current_thread().name
            with lock:
                first = me not in seen.values()
                if m.event_id == ids[10] and not failed_once:
                    failed_once.append(me)
                    raise RuntimeError("a handler that fails once")
                seen.setdefault(m.event_id, me)
            if first:
                all_in.wait()

        pool = smss.run_workers(shared_addr(), self.t, "pool", handle, workers=workers, batch=5,
                                timeout=WAIT, reconnect_timeout=WAIT)
        try:
            wait_until("every message handled", lambda: len(seen) == len(ids))
        finally:
            pool.stop(timeout=WAIT)
        self.assertEqual(sorted(seen), ids)
        self.assertEqual(len(set(seen.values())), workers, "each worker got a share")
        self.assertEqual(failed_once and len(failed_once), 1)
        self.assertTrue(any(isinstance(e, RuntimeError) for e in pool.errors))

    def test_max_deliver_moves_to_dlq(self):
        dead = topic_name("dead")
        self.c.create(dead)
        ids = self.c.publish_batch(self.t, [b"poison", b"fine"])
        sub = self.c.subscribe(self.t, group="g", batch=1)
        self.assertEqual(next_batch(sub)[0].event_id, ids[0])
        sub.close()  # like a crash: a failed delivery
        with self.c.subscribe(self.t, group="g", batch=1, max_deliver=1, dlq=dead) as sub:
            self.assertEqual(next_batch(sub)[0].event_id, ids[1])
        with self.c.subscribe(dead, 0) as d:
            m = next_batch(d)[0]
        self.assertEqual(m.payload, b"poison")
        self.assertEqual(m.headers["dlq.topic"], self.t)
        self.assertEqual(m.headers["dlq.id"], str(ids[0]))
        self.assertEqual(m.headers["dlq.group"], "g")
        self.assertEqual(m.headers["dlq.deliveries"], "1")

    def test_standby_in_process_takes_over_after_stop(self):
        ids = self.c.publish_batch(self.t, [b"1", b"2"])
        a = self.c.subscribe(self.t, group="g", batch=1)
        self.assertEqual(next_batch(a)[0].event_id, ids[0])
        seen = []
        b = self.c.subscribe(self.t, group="g", batch=1, liveness=5, on_standby=seen.append)
        got = queue.Queue()
        threading.Thread(target=lambda: got.put(next_batch(b)), daemon=True).start()
        wait_until("standby", lambda: b.standby)
        self.assertEqual(seen, [b])
        a.stop()  # unacknowledged: b gets message 1 again
        batch = got.get(timeout=WAIT)
        self.assertEqual(batch[0].event_id, ids[0])
        self.assertFalse(b.standby)
        b.stop()

    def test_takeover_between_processes(self):
        ids = self.c.publish_batch(self.t, [b"1", b"2", b"3"])
        here = os.path.abspath(__file__)
        procs = []
        try:
            a = subprocess.Popen([sys.executable, here, "worker", shared_addr(), self.t, "g", "hang"],
                                 stdout=subprocess.PIPE, stdin=subprocess.PIPE)
            procs.append(a)
            la = Lines(a)
            self.assertEqual(la.next(), "GOT %d" % ids[0])
            b = subprocess.Popen([sys.executable, here, "worker", shared_addr(), self.t, "g", "ack3"],
                                 stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            procs.append(b)
            lb = Lines(b)
            self.assertEqual(lb.next(), "STANDBY")
            [g] = self.c.groups(self.t)
            self.assertEqual((g.active, g.standby_count), (True, 1))
            os.kill(a.pid, signal.SIGKILL)
            a.wait(timeout=WAIT)
            self.assertEqual(lb.next(), "ACTIVE")
            self.assertEqual([lb.next() for _ in range(3)], ["GOT %d" % i for i in ids])
            self.assertEqual(lb.next(), "DONE")
            self.assertEqual(b.wait(timeout=WAIT), 0)
            [g] = self.c.groups(self.t)
            self.assertEqual((g.committed_id, g.lag), (ids[2], 0))
        finally:
            for p in procs:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(timeout=WAIT)
                for f in (p.stdout, p.stdin):
                    if f is not None:
                        f.close()


def worker(addr, topic, group, mode):
    """A consumer-group member in its own process: `hang` takes one batch and
    waits (until killed); `ack3` acknowledges three messages and exits."""
    def say(s):
        sys.stdout.write(s + "\n")
        sys.stdout.flush()

    c = smss.Client(addr, timeout=WAIT)
    sub = c.subscribe(topic, group=group, batch=1, liveness=5,
                      on_standby=lambda s: say("STANDBY"), on_active=lambda s: say("ACTIVE"))
    n = 0
    for batch in sub:
        for m in batch:
            say("GOT %d" % m.event_id)
        if mode == "hang":
            sys.stdin.read()  # the test kills this process
            return
        batch.ack()
        n += len(batch)
        if n >= 3:
            break
    sub.stop()
    say("DONE")


@unittest.skipUnless(os.environ.get("SMSS_TLS_ADDR"), "no SMSS_TLS_ADDR: no TLS server")
class Tls(unittest.TestCase):
    def test_commands_and_a_subscription_over_tls(self):
        import ssl
        ctx = ssl.create_default_context(cafile=os.environ["SMSS_TLS_CA"])
        with client(os.environ["SMSS_TLS_ADDR"], ssl_context=ctx) as c:
            t = topic_name("tls")
            c.create(t)
            first = c.publish(t, b"secret")
            c.publish(t, b"two")
            sub = c.subscribe(t, first - 1)
            batch = next_batch(sub)
            self.assertEqual([m.payload for m in batch][:1], [b"secret"])
            batch.ack()
            sub.stop()

    def test_a_server_the_ca_did_not_sign_is_refused(self):
        import ssl
        ctx = ssl.create_default_context()  # the system roots: not our CA
        c = client(os.environ["SMSS_TLS_ADDR"], ssl_context=ctx, reconnect=False)
        with self.assertRaises(smss.ConnectionError):
            c.connect()
        c.close()


class Auth(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("auth:\n  token: s3cret-token\nlimits:\n  maxConnections: 4\n")

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def test_token_on_connect(self):
        with client(self.server.addr, token="s3cret-token") as c:
            t = topic_name()
            c.create(t)
            with c.subscribe(t, "$") as sub:  # the subscription's connection AUTHs too
                eid = c.publish(t, b"x")
                self.assertEqual(next_batch(sub)[0].event_id, eid)

    def test_no_or_wrong_token(self):
        with client(self.server.addr) as c:
            c.ping()  # allowed before AUTH
            with self.assertRaises(smss.NoAuth):
                c.list()
        with self.assertRaises(smss.NoAuth):
            client(self.server.addr, token="wrong").connect()

    def test_busy(self):
        held = [client(self.server.addr, token="s3cret-token").connect() for _ in range(4)]
        try:
            with self.assertRaises(smss.Busy):
                client(self.server.addr, token="s3cret-token", reconnect=False).connect()
        finally:
            for c in held:
                c.close()


class Replication(unittest.TestCase):
    def test_slave_readonly_slaves_promote(self):
        master = Server("replication:\n  peer: ''\n")
        try:
            slave = Server("", args=["--role", "slave", "--master", master.addr])
            try:
                with client(master.addr) as m, client(slave.addr) as s:
                    t = topic_name()
                    m.create(t)
                    eid = m.publish(t, b"x")
                    wait_until("the slave streaming with the message",
                               lambda: s.stats().get("repl_state") == "streaming"
                               and s.stats()["last_event_id"] >= eid)
                    [sl] = wait_until("SLAVES", m.slaves)
                    self.assertTrue(sl.addr and sl.state)
                    self.assertEqual(s.role().role, "slave")
                    self.assertEqual(s.info(t).last_id, eid)
                    with self.assertRaises(smss.ReadOnly):
                        s.publish(t, b"y")
                    with self.assertRaises(smss.ReadOnly):
                        s.subscribe(t, group="g")
                    with s.subscribe(t, 0) as sub:  # a plain SUB works on a slave
                        self.assertEqual(next_batch(sub)[0].event_id, eid)
                    master.kill()
                    start = s.promote()
                    self.assertGreater(start, eid)
                    self.assertEqual(s.role().role, "master")
                    self.assertGreater(s.publish(t, b"z"), eid)
            finally:
                slave.close()
        finally:
            master.close()

    def test_noslave(self):
        server = Server("replication:\n  minSlaves: 1\n  syncTimeoutMs: 100\n")
        try:
            with client(server.addr) as c, self.assertRaises(smss.NoSlave):
                c.create(topic_name())
        finally:
            server.close()


class Failures(unittest.TestCase):
    def setUp(self):
        self.server = Server("timeout:\n  server:\n    alive: 200\n")

    def tearDown(self):
        self.server.close()

    def test_reader_reconnects_after_restart(self):
        c = client(self.server.addr, backoff_max=0.2)
        t = topic_name()
        c.create(t)
        ids = c.publish_batch(t, [b"1", b"2"])
        plain = c.subscribe(t, 0, batch=2, liveness=5)
        group = c.subscribe(t, group="g", batch=2, liveness=5)
        for sub in (plain, group):
            b = next_batch(sub)
            self.assertEqual([m.event_id for m in b], ids)
            b.ack()
        # Both are idle now (after an ACK, with nothing left to send).
        wait_until("the group commit", lambda: c.groups(t)[0].committed_id == ids[1])
        self.server.restart()
        # Reads reconnect; a write on the closed connection goes to a new one.
        self.assertEqual(c.info(t).last_id, ids[1])
        eid = c.publish(t, b"3")
        for sub in (plain, group):
            b = next_batch(sub)
            self.assertEqual([m.event_id for m in b], [eid])
            self.assertEqual(sub.reconnects, 1)
            sub.stop()
        c.close()

    def test_unknown_outcome_when_server_dies_mid_write(self):
        c = client(self.server.addr, reconnect_timeout=1)
        t = topic_name()
        c.create(t)
        conn = c._conn
        sent = threading.Event()
        real_send = conn.send

        def send(data):
            real_send(data)
            sent.set()
        conn.send = send
        # The server takes the bytes into its socket but never answers.
        os.kill(self.server.proc.pid, signal.SIGSTOP)
        out = queue.Queue()

        def publish():
            try:
                out.put(c.publish(t, b"x"))
            except Exception as e:  # the assertion is on what was raised
                out.put(e)
        threading.Thread(target=publish, daemon=True).start()
        self.assertTrue(sent.wait(WAIT))
        self.server.kill()
        e = out.get(timeout=WAIT)
        self.assertIsInstance(e, smss.UnknownOutcome)
        self.assertEqual(e.command, "PUB")
        self.assertIsInstance(e, smss.ConnectionError)
        self.assertIsInstance(e, ConnectionError)  # the builtin too

    def test_a_keyed_write_is_resent_after_the_server_died_and_gets_the_same_id(self):
        c = client(self.server.addr, backoff_max=0.2)
        t = topic_name()
        c.create(t)
        conn = c._conn
        real_read = conn.read_line
        answered = []

        def read_line():
            # The server wrote the message and answered; it dies before the
            # client reads the reply, which is lost with the connection.
            answered.append(real_read())
            self.server.kill()
            self.server.start(self.server.port)
            raise smss.ConnectionError("the connection broke (simulated lost reply)")
        conn.read_line = read_line
        eid = c.publish(t, b"x", key="order-1")
        self.assertEqual(len(answered), 1)
        first = int(answered[0].split(" ")[1])
        self.assertEqual(eid, first)
        self.assertTrue(eid.dup, "the re-sent publish is the repeat of the first")
        self.assertEqual(c.info(t).messages, 1)
        # Without a key, the same break is still an unknown outcome.
        conn = c._ensure()
        real_read2 = conn.read_line

        def read_line2():
            real_read2()
            raise smss.ConnectionError("the connection broke (simulated lost reply)")
        conn.read_line = read_line2
        with self.assertRaises(smss.UnknownOutcome):
            c.publish(t, b"y")
        c.close()

    def test_timeout_of_a_write_is_unknown_and_reads_retry(self):
        c = client(self.server.addr, timeout=0.3, reconnect_timeout=0.5)
        t = topic_name()
        c.create(t)
        os.kill(self.server.proc.pid, signal.SIGSTOP)
        try:
            with self.assertRaises(smss.UnknownOutcome) as cm:
                c.create(topic_name())
            self.assertEqual(cm.exception.command, "CREATE")
            with self.assertRaises(smss.ConnectionError) as cm:
                c.info(t)
            self.assertNotIsInstance(cm.exception, smss.UnknownOutcome)
        finally:
            os.kill(self.server.proc.pid, signal.SIGCONT)
        self.assertEqual(c.info(t).name, t)  # back: the read reconnects


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(*sys.argv[2:6])
    else:
        unittest.main()

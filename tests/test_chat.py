"""examples/chat.c driven by Python socket clients on every backend: joins, nicknames, broadcast
order, /who, /quit, a slow client dropped while the others carry on, an overlong line, bad input
from the network (thousands of idle connections, binary garbage, a disconnect mid-line, a reset
with unread data), and SIGTERM telling every client goodbye before the exit (status 0, final
line)."""
import os
import re
import resource
import selectors
import socket
import struct
import sys
import time
import unittest

import harness

GOODBYE = b"server shutting down, goodbye"
FINAL_LINE = "chat: shut down cleanly"


class Server:
    """examples/chat on a free port, on one backend."""

    def __init__(self, backend):
        self.backend = backend
        self.proc, self.port = harness.start_example("chat", backend)

    def stop(self, test):
        """SIGTERM: the server must exit 0 after printing its final line."""
        harness.stop_example(test, self.proc, "chat", FINAL_LINE)

    def kill(self):
        harness.kill_example(self.proc)

    def memory_kib(self, field):
        """VmRSS (now) or VmHWM (the peak) of /proc/PID/status."""
        return harness.memory_kib(self.proc.pid, field)

    def sockets(self):
        """The sockets the server holds."""
        return harness.open_sockets(self.proc.pid)

    def wait_sockets(self, test, most, timeout):
        """Waits until the server holds at most `most` sockets; fails after timeout seconds."""
        deadline = time.monotonic() + timeout
        while self.sockets() > most and time.monotonic() < deadline:
            time.sleep(0.01)
        test.assertLessEqual(self.sockets(), most, "the sockets the server holds after %g s" % timeout)


def read_to_eof(test, socks, timeout):
    """Reads every socket of socks until its stream ends (a reset ends it too), all at once and
    within timeout seconds in all; returns how many bytes each got. Fails, with what each of
    the others got, when some streams had not ended by then."""
    received = {sock: 0 for sock in socks}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                test.fail("%d of %d streams had not ended after %g s (bytes each got so far: %s)" % (
                    len(sel.get_map()), len(socks), timeout,
                    [received[key.fileobj] for key in sel.get_map().values()]))
            for key, _ in sel.select(left):
                try:
                    chunk = key.fileobj.recv(1 << 20)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    received[key.fileobj] += len(chunk)
                else:
                    sel.unregister(key.fileobj)
    return [received[sock] for sock in socks]


class Client:
    """A chat client that reads whole lines; learns its name from the welcome line."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(20 * harness.SCALE)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        if rcvbuf is None:
            welcome = self.line()
            assert welcome.startswith(b"* welcome, "), welcome
            self.name = welcome[len(b"* welcome, "):].split(b"!")[0]

    def send(self, text):
        self.sock.sendall(text if isinstance(text, bytes) else text.encode())

    def line(self):
        """The next line without its newline; b"" at the end of the stream."""
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def until(self, want):
        """Reads lines until one equals `want`; returns the lines before it."""
        seen = []
        while True:
            line = self.line()
            if line == want:
                return seen
            if line == b"" and not self.buf:
                raise AssertionError("stream ended before %r; saw %r" % (want, seen[-5:]))
            seen.append(line)

    def pending(self):
        """The whole lines that have arrived, without waiting for more."""
        self.sock.setblocking(False)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(20 * harness.SCALE)
        *lines, self.buf = self.buf.split(b"\n")
        return lines

    def close(self):
        self.sock.close()


class ChatCase(unittest.TestCase):
    def check_room(self, server):
        a = Client(server.port)
        b = Client(server.port)
        self.assertEqual(a.line(), b"* %s joined" % b.name)
        a.send("/nick alice\n")
        self.assertEqual(a.line(), b"* you are now alice")
        self.assertEqual(b.line(), b"* %s is now known as alice" % a.name)
        b.send("/nick bob\r\n")  # CRLF as telnet sends it
        self.assertEqual(b.line(), b"* you are now bob")
        self.assertEqual(a.line(), b"* %s is now known as bob" % b.name)
        c = Client(server.port)
        self.assertEqual(a.line(), b"* %s joined" % c.name)
        self.assertEqual(b.line(), b"* %s joined" % c.name)
        c.send("/nick alice\n/nick no spaces\n/dance\n")
        self.assertEqual(c.line(), b"* the name alice is taken")
        self.assertTrue(c.line().startswith(b"* a name is 1 to 32"))
        self.assertEqual(c.line(), b"* commands: /nick NAME, /who, /quit")
        # Broadcast: in order, to everyone but the sender, lines sent in one write or many.
        b.send("".join("message %d\n" % i for i in range(300)))
        for i in range(300):
            want = b"<bob> message %d" % i
            self.assertEqual(a.line(), want)
            self.assertEqual(c.line(), want)
        c.send("/who\n")
        who = c.line()
        self.assertTrue(who.startswith(b"* online: "), who)
        self.assertEqual(sorted(who[len(b"* online: "):].split(b", ")), sorted([b"alice", b"bob", c.name]))
        c.send("/quit\n")
        self.assertEqual(c.line(), b"* bye")
        self.assertEqual(c.line(), b"")
        self.assertEqual(a.line(), b"* %s left" % c.name)
        self.assertEqual(b.line(), b"* %s left" % c.name)
        b.close()
        self.assertEqual(a.line(), b"* bob left")
        server.stop(self)
        self.assertEqual(a.line(), GOODBYE)
        self.assertEqual(a.line(), b"")
        a.close()
        c.close()

    def check_slow_client(self, server):
        a = Client(server.port)
        slow = Client(server.port, rcvbuf=4096)  # connects and never reads
        slow_name = a.line()[len(b"* "):-len(b" joined")]
        b = Client(server.port)
        self.assertEqual(a.line(), b"* %s joined" % b.name)
        note = b"* %s was too slow and has been disconnected" % slow_name
        payload = "x" * 1000
        notices = []
        # The sender waits for the reader after each batch, so only the slow client lags:
        # its socket buffers and then its queue of 256 lines fill, and it is dropped.
        for batch in range(20):
            a.send("".join("%d %s\n" % (batch * 100 + i, payload) for i in range(100)))
            lines = []
            while len(lines) < 100:
                line = b.line()
                (notices if line.startswith(b"* ") else lines).append(line)
            self.assertEqual([int(l.split()[1]) for l in lines],
                             list(range(batch * 100, batch * 100 + 100)))
        self.assertEqual(a.until(note), [])
        a.send("still talking\n")
        notices += b.until(b"<%s> still talking" % a.name)
        self.assertEqual(notices, [note])
        # The slow client gets what its buffers held, then the end of the stream.
        received = 0
        while True:
            try:
                chunk = slow.sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += len(chunk)
        self.assertLess(received, 2000 * 1000, "the slow client received everything")
        server.stop(self)
        for client in (a, b):
            self.assertEqual(client.line(), GOODBYE)
            client.close()
        slow.close()

    def check_overlong_line(self, server):
        a = Client(server.port)
        b = Client(server.port)
        self.assertEqual(a.line(), b"* %s joined" % b.name)
        longest = b"y" * 4096
        b.send(longest + b"\n")
        self.assertEqual(a.line(), b"<%s> %s" % (b.name, longest))
        b.send(b"z" * 5000 + b"\n")
        self.assertEqual(b.line(), b"* error: lines are limited to 4096 bytes; closing")
        self.assertEqual(b.line(), b"")
        self.assertEqual(a.line(), b"* %s left" % b.name)
        a.send("anyone?\n")
        c = Client(server.port)
        self.assertEqual(a.line(), b"* %s joined" % c.name)
        server.stop(self)
        for client in (a, c):
            self.assertEqual(client.line(), GOODBYE)
            self.assertEqual(client.line(), b"")
        a.close()
        b.close()
        c.close()

    def check_goodbye(self, server):
        clients = [Client(server.port) for _ in range(5)]
        for i, client in enumerate(clients):
            client.send("/nick user%d\n" % i)
            client.until(b"* you are now user%d" % i)
        server.stop(self)
        for client in clients:
            client.until(GOODBYE)  # after the notices of the others' joins and nicknames
            self.assertEqual(client.line(), b"")
            client.close()

    def check_idle_connections(self, server):
        """Thousands of connections that never send and never read while two clients chat.
        Every join is told to everyone, so the joins alone cost one write per pair of clients:
        10 000 clients make 5e7 writes, about 60 s here (measured on epoll), so this uses 2000
        (select: 900, below FD_SETSIZE = 1024, the most fds it can watch). A client that keeps
        up (a) is in the room during the burst of joins: it must not be dropped (it was: every
        burst of joins overflowed the queues of everyone). Then a sends more than an idle
        client's socket buffers and queue can hold: every idle client is dropped, as the design
        promises, b (which reads) gets every line, and the server's memory stays bounded."""
        # Two tasks per client: task_count bounds the tasks under TSan.
        idle_count = min(900 if server.backend == "select" else 2000, harness.task_count(2000) // 2)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        a = Client(server.port)
        sockets = server.sockets()  # the listener and a
        idle = []
        for _ in range(idle_count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a little kernel memory
            sock.settimeout(20 * harness.SCALE)
            sock.connect(("127.0.0.1", server.port))
            idle.append(sock)
        self.addCleanup(lambda: [sock.close() for sock in idle])
        b = Client(server.port)
        # Joins come in any order (a reader waits its turn before it announces its join), and
        # with thousands of them an idle client's buffers fill during the joins already: it is
        # dropped then, after its own join was announced.
        joined, notices = set(), []
        while len(joined) < idle_count + 1:
            line = a.line()
            found = re.fullmatch(rb"\* (\S+) (was too slow and has been disconnected|joined)", line)
            self.assertIsNotNone(found, line)
            if found.group(2) == b"joined":
                joined.add(found.group(1))
            else:
                notices.append(line)
        idle_names = joined - {b.name}
        payload = "x" * 1000
        for batch in range(8):
            a.send("".join("%d %s\n" % (batch * 100 + i, payload) for i in range(100)))
            lines = []
            while len(lines) < 100:
                line = b.line()
                (notices if line.startswith(b"* ") else lines).append(line)
            self.assertEqual([int(l.split()[1]) for l in lines], list(range(batch * 100, batch * 100 + 100)))
            notices += a.pending()  # a reads too, or it would fall behind on the notices
        b.send("the end\n")
        notices += a.until(b"<%s> the end" % b.name)
        dropped = set()
        for line in notices:  # b may see some joins that waited their turn
            found = re.fullmatch(rb"\* (\S+) (was too slow and has been disconnected|joined)", line)
            self.assertIsNotNone(found, line)
            if found.group(2) != b"joined":
                dropped.add(found.group(1))
        self.assertEqual(dropped, idle_names, "every idle client is dropped, and only they are")
        # A dropped client's reader closes its socket once the writer has ended, a few loop
        # iterations after the notice: first on the server's side (it keeps the listener, a
        # and b), so that a failure there is told apart from one in the streams below.
        server.wait_sockets(self, sockets + 1, 30 * harness.SCALE)
        # A dropped client gets what its buffers held, then the end of its stream: twenty of
        # them are read at once, with one bound for them all.
        for received in read_to_eof(self, idle[:20], 30 * harness.SCALE):
            self.assertLess(received, 800 * 1000, "a client that never reads got every line")
        peak = server.memory_kib("VmHWM")
        sys.stderr.write("[chat, %d idle on %s: peak RSS %d KiB, now %d KiB] " % (
            idle_count, server.backend, peak, server.memory_kib("VmRSS")))
        harness.check_memory(self, peak, 256 * 1024, "peak RSS with %d idle connections" % idle_count)
        server.stop(self)
        for client in (a, b):
            self.assertEqual(client.until(GOODBYE), [])
            client.close()

    def check_bad_input(self, server):
        """Binary garbage, NUL bytes, a line cut by a disconnect and a reset with unread data
        pending: each is a line, an ignored fragment or a departure, never a crash."""
        a = Client(server.port)
        b = Client(server.port)
        self.assertEqual(a.line(), b"* %s joined" % b.name)
        garbage = bytes(i for i in range(256) if i not in (0, 10, 13))
        b.send(garbage + b"\n" + b"before\x00after\n" + b"/nick \x00\xff\n" + b"\x00\n")
        self.assertEqual(a.line(), b"<%s> %s" % (b.name, garbage))
        # The text of a line is formatted with %.*s, which ends at a NUL byte.
        self.assertEqual(a.line(), b"<%s> before" % b.name)
        self.assertTrue(b.line().startswith(b"* a name is 1 to 32"))
        self.assertEqual(a.line(), b"<%s> " % b.name)
        # A line without its newline, then the connection closes: the fragment is dropped.
        b.send(b"half a li")
        b.close()
        self.assertEqual(a.line(), b"* %s left" % b.name)
        # A reset with lines unread: the notices of the others' joins and lines are pending.
        c = Client(server.port)
        self.assertEqual(a.line(), b"* %s joined" % c.name)
        d = Client(server.port)
        self.assertEqual(a.line(), b"* %s joined" % d.name)
        a.send("".join("line %d for nobody\n" % i for i in range(100)))
        c.send("c was here\n")
        self.assertEqual(a.line(), b"<%s> c was here" % c.name)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.send(b"cut short " + b"z" * 3000)  # no newline: whatever arrived is a fragment
        c.close()
        self.assertEqual(a.until(b"* %s left" % c.name), [])
        a.send("still here\n")
        self.assertEqual(d.until(b"<%s> still here" % a.name)[-1], b"* %s left" % c.name)
        self.assertIsNone(server.proc.poll(), "the server died")
        server.stop(self)
        for client in (a, d):
            self.assertEqual(client.until(GOODBYE), [])
            client.close()


def _add_backend_tests():
    checks = {"room": ChatCase.check_room, "slow_client": ChatCase.check_slow_client,
              "overlong_line": ChatCase.check_overlong_line, "goodbye": ChatCase.check_goodbye,
              "idle_connections": ChatCase.check_idle_connections,
              "bad_input": ChatCase.check_bad_input}
    for backend in harness.backends():
        for name, check in checks.items():
            def method(self, check=check, backend=backend):
                server = Server(backend)
                try:
                    check(self, server)
                finally:
                    server.kill()
            setattr(ChatCase, "test_%s__%s" % (name, backend), method)


_add_backend_tests()

if __name__ == "__main__":
    unittest.main()

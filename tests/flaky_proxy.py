"""A TCP proxy on 127.0.0.1 that can go down and come back: a network outage between a client and a server."""

from __future__ import annotations

import socket
import threading


class FlakyProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``. :meth:`down` cuts every open connection and refuses new
    ones (accepted, then closed at once, like a reset); :meth:`up` lets them through again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._closing = False
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def down(self) -> None:
        self._up.clear()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            _close(c)

    def up(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closing = True
        self.down()
        _close(self._srv)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            if not self._up.is_set():
                self.refused += 1
                _close(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or not self._up.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        _close(src)
        _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass

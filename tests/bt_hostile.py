"""A hostile BitTorrent peer for tests: it accepts connections on
127.0.0.1, completes the handshake for one info-hash, claims every piece
(have-all or a full bitfield), unchokes, and then misbehaves in the chosen
way:

    garbage     answers every request with random bytes (wrong SHA-1)
    silent      never answers a request
    stall       answers its first request with a piece message cut off
                half way, then sends nothing more (the connection stays
                open)
    oversize    sends a message whose length prefix is 64 MiB
    badindex    sends "have" for a piece past the end
    reject      rejects every request (BEP 6 reject-request)
    rejectfirst rejects the first request for each piece, then serves the
                true bytes (give data= and piece_length=): a reject is
                "not now", as from a peer whose store is still taking the
                piece in

It runs in a thread of the test process; stop() closes everything.
"""

import os
import socket
import struct
import threading


class HostilePeer:
    def __init__(self, info_hash_hex, piece_count, mode="garbage", data=None,
                 piece_length=None):
        self.info_hash = bytes.fromhex(info_hash_hex)
        self.data = data
        self.piece_length = piece_length
        self.rejected = set()
        self.piece_count = piece_count
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.connections = 0
        self.stopping = False
        self.threads = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=10)
        for t in self.threads:
            t.join(timeout=10)
        self.sock.close()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _recv_exact(self, conn, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = conn.recv(n - len(buf))
            except socket.timeout:
                if self.stopping:
                    raise ConnectionError("stopping")
                continue
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def _serve(self, conn):
        conn.settimeout(0.5)
        try:
            hs = self._recv_exact(conn, 68)
            if hs[28:48] != self.info_hash:
                return
            reserved = bytearray(8)
            reserved[7] |= 0x04
            conn.sendall(b"\x13BitTorrent protocol" + bytes(reserved) + self.info_hash
                         + b"-XX0001-" + os.urandom(12))
            fast = hs[20 + 7] & 0x04
            if fast:
                conn.sendall(struct.pack(">IB", 1, 0x0E))
            else:
                nbytes = (self.piece_count + 7) // 8
                bits = bytearray(b"\xff" * nbytes)
                spare = nbytes * 8 - self.piece_count
                if spare:
                    bits[-1] &= (0xFF << spare) & 0xFF
                conn.sendall(struct.pack(">IB", 1 + nbytes, 5) + bytes(bits))
            if self.mode == "oversize":
                conn.sendall(struct.pack(">IB", 64 << 20, 7) + b"\0" * 100)
            if self.mode == "badindex":
                conn.sendall(struct.pack(">IBI", 5, 4, self.piece_count + 5))
            conn.sendall(struct.pack(">IB", 1, 1))      # unchoke
            while not self.stopping:
                (length,) = struct.unpack(">I", self._recv_exact(conn, 4))
                if length == 0:
                    continue
                body = self._recv_exact(conn, length)
                if body[0] == 6 and length == 13:
                    self.requests += 1
                    index, begin, size = struct.unpack(">III", body[1:])
                    if self.mode == "stall" and self.requests == 1:
                        conn.sendall(struct.pack(">IBII", 9 + size, 7, index, begin)
                                     + b"\0" * (size // 2))
                    elif self.mode == "garbage":
                        conn.sendall(struct.pack(">IBII", 9 + size, 7, index, begin)
                                     + os.urandom(size))
                    elif self.mode == "reject" and fast:
                        conn.sendall(struct.pack(">IBIII", 13, 0x10, index, begin, size))
                    elif self.mode == "rejectfirst" and index not in self.rejected:
                        self.rejected.add(index)
                        conn.sendall(struct.pack(">IBIII", 13, 0x10, index, begin, size))
                    elif self.mode == "rejectfirst":
                        start = index * self.piece_length + begin
                        conn.sendall(struct.pack(">IBII", 9 + size, 7, index, begin)
                                     + self.data[start:start + size])
        except (ConnectionError, OSError):
            pass
        finally:
            conn.close()

#!/usr/bin/python3
"""A small, deliberately broken NBD server for the fault tests.

    nbd_hostile.py SOCKET SCENARIO

It negotiates like a well-behaved fixed-newstyle server (structured
replies, base:allocation, GO) and then misbehaves in one way:

  truncated     sends half of the greeting and closes
  wrong-cookie  answers every read with another cookie
  oversized     sends a data chunk longer than the read asked for
  overlap       covers a read with two overlapping data chunks
  bad-magic     answers with garbage instead of a reply header
  huge-error    sends an error chunk whose message length exceeds the chunk
  silent        reads requests and never answers
  good          behaves (reads return a pattern)
  no-go         behaves, but knows neither GO nor structured replies, so
                the client falls back to EXPORT_NAME and simple replies

Each connection is served in its own thread until the client leaves."""

import socket
import struct
import sys
import threading

SIZE = 1 << 20
NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x0003E889045565A9
SIMPLE = 0x67446698
STRUCT = 0x668E33EF


def pattern(offset, length):
    """The bytes of the export: each byte is its offset modulo 251."""
    return bytes((offset + i) % 251 for i in range(length))


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def opt_reply(conn, opt, rtype, data=b""):
    conn.sendall(struct.pack(">QIII", REPMAGIC, opt, rtype, len(data)) + data)


def chunk(cookie, ctype, payload, done=True):
    return struct.pack(">IHHQI", STRUCT, 1 if done else 0, ctype, cookie, len(payload)) + payload


def negotiate(conn, scenario):
    if scenario == "truncated":
        conn.sendall(struct.pack(">Q", NBDMAGIC) + b"IHA")
        return False
    conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 3))
    recv_exact(conn, 4)
    while True:
        magic, opt, length = struct.unpack(">QII", recv_exact(conn, 16))
        data = recv_exact(conn, length)
        if scenario == "no-go" and opt == 1:   # EXPORT_NAME: no framing
            conn.sendall(struct.pack(">QH", SIZE, 1 | 2))  # NO_ZEROES agreed
            return True
        if scenario == "no-go" and opt in (7, 8, 10):
            opt_reply(conn, opt, 0x80000001)
        elif opt == 8:                     # STRUCTURED_REPLY
            opt_reply(conn, opt, 1)
        elif opt == 10:                    # SET_META_CONTEXT
            opt_reply(conn, opt, 4, struct.pack(">I", 1) + b"base:allocation")
            opt_reply(conn, opt, 1)
        elif opt == 7:                     # GO
            opt_reply(conn, opt, 3, struct.pack(">HQH", 0, SIZE, 1 | 2))
            opt_reply(conn, opt, 1)
            return True
        elif opt == 2:                     # ABORT
            return False
        else:
            opt_reply(conn, opt, 0x80000001)


def serve(conn, scenario):
    try:
        if not negotiate(conn, scenario):
            return
        while True:
            magic, flags, ctype, cookie, offset, length = struct.unpack(
                ">IHHQQI", recv_exact(conn, 28))
            if ctype == 2:                 # DISC
                return
            if scenario == "silent":
                continue
            if ctype == 7:                 # BLOCK_STATUS: all data
                conn.sendall(chunk(cookie, 5, struct.pack(">III", 1, length, 0)))
                continue
            if ctype != 0:
                conn.sendall(struct.pack(">IIQ", SIMPLE, 22, cookie))
                continue
            data = pattern(offset, length)
            if scenario == "no-go":
                conn.sendall(struct.pack(">IIQ", SIMPLE, 0, cookie) + data)
            elif scenario == "good":
                conn.sendall(chunk(cookie, 1, struct.pack(">Q", offset) + data))
            elif scenario == "wrong-cookie":
                conn.sendall(chunk(cookie + 1000, 1, struct.pack(">Q", offset) + data))
                conn.sendall(struct.pack(">IIQ", SIMPLE, 0, cookie ^ 0xDEAD) + data)
            elif scenario == "oversized":
                conn.sendall(chunk(cookie, 1, struct.pack(">Q", offset) + data + b"x" * 4096))
            elif scenario == "overlap":
                half = length // 2
                conn.sendall(chunk(cookie, 1, struct.pack(">Q", offset) + data[:half + 512],
                                   done=False))
                conn.sendall(chunk(cookie, 1, struct.pack(">Q", offset + half) + data[half:]))
            elif scenario == "bad-magic":
                conn.sendall(b"\xde\xad\xbe\xef" * 8)
            elif scenario == "huge-error":
                conn.sendall(chunk(cookie, 0x8001, struct.pack(">IH", 5, 60000) + b"oops"))
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def main():
    path, scenario = sys.argv[1], sys.argv[2]
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, scenario), daemon=True).start()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""A small, deliberately broken NBD server for the fault tests.

    nbd_hostile.py SOCKET SCENARIO [CERTDIR]

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
  starttls-inject
                answers STARTTLS with an ACK followed, in the clear, by
                forged replies to the rest of the negotiation (export size
                FORGED_SIZE), then runs TLS (server-cert.pem/server-key.pem
                from CERTDIR) and behaves
  tls-good      STARTTLS answered properly, then TLS, then behaves
  tiny-chunks   answers a read at offset 0 with 1-byte data chunks in
                reverse order (other reads: 16 chunks in reverse order,
                a valid reply)
  huge-option-reply
                claims a 2 GiB reply to STRUCTURED_REPLY
  long-info-name
                sends an NBD_INFO_NAME longer than the 4096-byte limit
  stopping      first connection: every read answered NBD_ESHUTDOWN (an
                error chunk); second: GO refused with NBD_REP_ERR_SHUTDOWN;
                then behaves
  stopping-busy
                a slow server (every read answered after 1 s) of
                BUSY_SIZE bytes with multi-conn that starts stopping
                once, as nbdkit does on SIGTERM, when it first reads a
                request at offset STOP_AT or beyond: that request and every later one on the
                connections open then get NBD_ESHUTDOWN, while the reads
                it took before are still answered, normally; new
                connections are refused (NBD_REP_ERR_SHUTDOWN) until
                every old one has gone, which it logs with the time since
                the stop ("all gone after S s"); then it behaves again
  trickle       answers GO with NBD_INFO_NAME replies, one byte every 0.2 s
  endless-info  answers GO with NBD_INFO_NAME replies forever
  long-option-error
                refuses GO with a 60000-byte error message
  long-error-chunk
                answers a read with an error chunk carrying a 5000-byte
                message (consistent with the chunk length)
  huge-chunk    answers a read with a chunk claiming 4 GiB

Each connection is served in its own thread until the client leaves."""

import os
import socket
import ssl
import struct
import sys
import threading
import time

SIZE = 1 << 20
FORGED_SIZE = 3 << 20
NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x0003E889045565A9
SIMPLE = 0x67446698
STRUCT = 0x668E33EF


_PERIOD = bytes(range(251))


def pattern(offset, length):
    """The bytes of the export: each byte is its offset modulo 251."""
    start = offset % 251
    return (_PERIOD * ((start + length) // 251 + 1))[start:start + length]


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


def opt_bytes(opt, rtype, data=b""):
    return struct.pack(">QIII", REPMAGIC, opt, rtype, len(data)) + data


def start_tls(conn, certdir):
    """Wrap conn in a server-side TLS session with the test CA's server
    certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(certdir, "server-cert.pem"),
                        os.path.join(certdir, "server-key.pem"))
    return ctx.wrap_socket(conn, server_side=True)


CLIENTS = [0]
CLIENTS_LOCK = threading.Lock()
# stopping-busy: a larger export (so that read-ahead near offset 0 does
# not reach STOP_AT), when the stop began (None: serving), whether it has
# happened (it happens once), and the connections open then, which the
# stop waits for.
BUSY_SIZE = 64 << 20
STOP_AT = 60 << 20
STOP = {"since": None, "done": False, "old": set(), "open": set()}
SEND_LOCKS = {}


def negotiate(conn, scenario, certdir):
    """Run the handshake; returns the socket to go on with (maybe TLS)
    or None to close, and which client this is (1 for the first that
    sent its flags: a readiness check that only connects does not count)."""
    if scenario == "truncated":
        conn.sendall(struct.pack(">Q", NBDMAGIC) + b"IHA")
        return None, 0
    conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 3))
    recv_exact(conn, 4)
    with CLIENTS_LOCK:
        CLIENTS[0] += 1
        nth = CLIENTS[0]
    while True:
        magic, opt, length = struct.unpack(">QII", recv_exact(conn, 16))
        data = recv_exact(conn, length)
        if opt == 5 and scenario == "starttls-inject":
            # The ACK, and in the same write the replies a man in the
            # middle would forge for STRUCTURED_REPLY, SET_META_CONTEXT
            # and GO.
            conn.sendall(opt_bytes(5, 1)
                         + opt_bytes(8, 1)
                         + opt_bytes(10, 1)
                         + opt_bytes(7, 3, struct.pack(">HQH", 0, FORGED_SIZE, 1 | 2))
                         + opt_bytes(7, 1))
            conn = start_tls(conn, certdir)
            # Swallow the three options the client sends through TLS.
            for _ in range(3):
                magic, opt, length = struct.unpack(">QII", recv_exact(conn, 16))
                recv_exact(conn, length)
            return conn, nth
        if opt == 5 and scenario == "tls-good":
            opt_reply(conn, opt, 1)
            conn = start_tls(conn, certdir)
            continue
        if scenario == "no-go" and opt == 1:   # EXPORT_NAME: no framing
            conn.sendall(struct.pack(">QH", SIZE, 1 | 2))  # NO_ZEROES agreed
            return conn, nth
        if scenario == "no-go" and opt in (7, 8, 10):
            opt_reply(conn, opt, 0x80000001)
        elif opt == 8 and scenario == "huge-option-reply":
            conn.sendall(struct.pack(">QIII", REPMAGIC, opt, 1, 0x7FFFFFFF))
            return None, nth
        elif opt == 7 and scenario == "long-info-name":
            opt_reply(conn, opt, 3, struct.pack(">H", 1) + b"n" * 5000)
            opt_reply(conn, opt, 3, struct.pack(">HQH", 0, SIZE, 1 | 2))
            opt_reply(conn, opt, 1)
            return conn, nth
        elif opt == 7 and scenario == "stopping" and nth == 2:
            opt_reply(conn, opt, 0x80000007, b"shutting down")
        elif opt == 7 and scenario == "stopping-busy" and STOP["since"] is not None:
            opt_reply(conn, opt, 0x80000007, b"shutting down")
        elif opt == 7 and scenario == "stopping-busy":
            opt_reply(conn, opt, 3, struct.pack(">HQH", 0, BUSY_SIZE, 1 | 2 | 0x100))
            opt_reply(conn, opt, 1)
            return conn, nth
        elif opt == 7 and scenario == "trickle":
            reply = struct.pack(">QIII", REPMAGIC, opt, 3, 6) + struct.pack(">H", 1) + b"name"
            while True:
                for b in reply:
                    conn.sendall(bytes([b]))
                    time.sleep(0.2)
        elif opt == 7 and scenario == "endless-info":
            while True:
                opt_reply(conn, opt, 3, struct.pack(">H", 1) + b"name")
        elif opt == 7 and scenario == "long-option-error":
            opt_reply(conn, opt, 0x80000006, b"e" * 60000)
        elif opt == 8:                     # STRUCTURED_REPLY
            opt_reply(conn, opt, 1)
        elif opt == 10:                    # SET_META_CONTEXT
            opt_reply(conn, opt, 4, struct.pack(">I", 1) + b"base:allocation")
            opt_reply(conn, opt, 1)
        elif opt == 7:                     # GO
            opt_reply(conn, opt, 3, struct.pack(">HQH", 0, SIZE, 1 | 2))
            opt_reply(conn, opt, 1)
            return conn, nth
        elif opt == 2:                     # ABORT
            return None, nth
        else:
            opt_reply(conn, opt, 0x80000001)


def serve_stopping_busy(conn, cookie, offset, data):
    """One read of the stopping-busy scenario (see the module's text):
    decided when it is read, answered by a thread of its own, so the
    reads of one connection are in flight together."""
    with CLIENTS_LOCK:
        if not STOP["done"] and offset >= STOP_AT:
            STOP["done"] = True
            STOP["since"] = time.monotonic()
            STOP["old"] = set(STOP["open"])
            print(f"stopping: {len(STOP['old'])} connections open", flush=True)
        stopping = STOP["since"] is not None and id(conn) in STOP["old"]
        send_lock = SEND_LOCKS.setdefault(id(conn), threading.Lock())
    if stopping:
        reply = chunk(cookie, 0x8001, struct.pack(">IH", 108, 0))
        delay = 0
    else:
        reply = chunk(cookie, 1, struct.pack(">Q", offset) + data)
        delay = 1

    def answer():
        time.sleep(delay)
        try:
            with send_lock:
                conn.sendall(reply)
        except OSError:
            pass
    threading.Thread(target=answer, daemon=True).start()


def stopping_busy_left(conn):
    """A connection of the stopping-busy scenario went away."""
    with CLIENTS_LOCK:
        STOP["open"].discard(id(conn))
        if STOP["since"] is None or id(conn) not in STOP["old"]:
            return
        STOP["old"].discard(id(conn))
        if not STOP["old"]:
            print(f"all gone after {time.monotonic() - STOP['since']:.2f} s",
                  flush=True)
            STOP["since"] = None


def serve(raw, scenario, certdir):
    conn = raw
    try:
        conn, nth = negotiate(raw, scenario, certdir)
        if conn is None:
            return
        if scenario == "stopping-busy":
            with CLIENTS_LOCK:
                STOP["open"].add(id(conn))
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
            if scenario == "stopping-busy":
                serve_stopping_busy(conn, cookie, offset, data)
                continue
            if scenario == "stopping" and nth == 1:
                # A server stopping gracefully: ESHUTDOWN for everything.
                conn.sendall(chunk(cookie, 0x8001, struct.pack(">IH", 108, 0)))
                continue
            if scenario == "no-go":
                conn.sendall(struct.pack(">IIQ", SIMPLE, 0, cookie) + data)
            elif scenario in ("good", "tls-good", "starttls-inject", "stopping"):
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
            elif scenario == "long-error-chunk":
                conn.sendall(chunk(cookie, 0x8001, struct.pack(">IH", 5, 5000) + b"m" * 5000))
            elif scenario == "huge-chunk":
                conn.sendall(struct.pack(">IHHQI", STRUCT, 1, 1, cookie, 0xFFFFFFF0)
                             + struct.pack(">Q", offset) + data)
            elif scenario == "tiny-chunks" and offset != 0:
                # Few chunks, still in reverse order: a valid reply.
                step = length // 16 or length
                starts = list(range(offset, offset + length, step))[::-1]
                conn.sendall(b"".join(
                    chunk(cookie, 1, struct.pack(">Q", o)
                          + pattern(o, min(step, offset + length - o)), done=(o == offset))
                    for o in starts))
            elif scenario == "tiny-chunks":
                last = offset + length - 1
                conn.sendall(b"".join(
                    chunk(cookie, 1, struct.pack(">QB", o, (o % 251)), done=(o == offset))
                    for o in range(last, offset - 1, -1)))
    except (EOFError, OSError, ssl.SSLError):
        pass
    finally:
        if scenario == "stopping-busy" and conn is not None:
            stopping_busy_left(conn)
        if conn is not None and conn is not raw:
            conn.close()
        raw.close()


def main():
    path, scenario = sys.argv[1], sys.argv[2]
    certdir = sys.argv[3] if len(sys.argv) > 3 else None
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, scenario, certdir), daemon=True).start()


if __name__ == "__main__":
    main()

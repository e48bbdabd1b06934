#!/usr/bin/python3
"""A small, deliberately lying HTTP server for the HTTP hardening tests.

    http_hostile.py PORTFILE SCENARIO

It listens on a free 127.0.0.1 port (written to PORTFILE once ready) and
serves one object whose bytes are a pattern of their offset (byte at
offset o is o % 251), answering HEAD and Range GETs.  Every request line
and header block is appended to PORTFILE + ".log".  SCENARIO says how
it lies:

  huge          claims 2^50 bytes (the largest size diskshelf accepts)
  too-big       claims 2^50 + 1 bytes in Content-Length
  max           claims 2^64 - 1 bytes in Content-Length
  range-max     refuses HEAD (405); its GET 0-0 says Content-Range
                bytes 0-0/18446744073709551615
  evil-etag     4 MiB object; its ETag holds control characters and an
                escape sequence
  evil-range    4 MiB object; its range answers carry a Content-Range
                with control characters that does not match the request
  good          4 MiB object, honest
"""

import http.server
import socket
import sys
import threading

MiB = 1 << 20


def pattern(offset, length):
    """The object's bytes: each byte is its offset modulo 251."""
    start = offset % 251
    block = bytes(range(251))
    out = (block[start:] + block * ((length // 251) + 2))[:length]
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    scenario = "good"
    log_path = None

    def size(self):
        return {"huge": 1 << 50, "too-big": (1 << 50) + 1,
                "max": (1 << 64) - 1}.get(self.scenario, 4 * MiB)

    def etag(self):
        if self.scenario == "evil-etag":
            return '"abc\x1b[31mRED\x07\x01def"'
        return '"fixed-etag"'

    def record(self):
        with open(self.log_path, "a") as f:
            f.write(self.requestline + "\n" + str(self.headers) + "\n")

    def log_message(self, fmt, *args):
        pass

    def do_HEAD(self):
        self.record()
        if self.scenario == "range-max":
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(self.size()))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", self.etag())
        self.end_headers()

    def do_GET(self):
        self.record()
        rng = self.headers.get("Range", "")
        if not rng.startswith("bytes="):
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        a, b = rng[6:].split("-")
        a, b = int(a), int(b)
        size = self.size()
        if self.scenario == "range-max":
            total = "18446744073709551615"
        else:
            total = str(size)
        body = pattern(a, b - a + 1)
        self.send_response(206)
        if self.scenario == "evil-range":
            self.send_header("Content-Range", f"bytes 9-\x1b[2J\x07{b}/{total}")
        else:
            self.send_header("Content-Range", f"bytes {a}-{b}/{total}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", self.etag())
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def main():
    portfile, scenario = sys.argv[1], sys.argv[2]
    Handler.scenario = scenario
    Handler.log_path = portfile + ".log"
    server = Server(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    with open(portfile + ".tmp", "w") as f:
        f.write(str(port))
    import os
    os.rename(portfile + ".tmp", portfile)
    server.serve_forever()


if __name__ == "__main__":
    main()

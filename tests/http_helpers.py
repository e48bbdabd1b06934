"""Helpers for the HTTP and disk-cache tests: nginx server-block text for
redirects and injected 503s, and counters over nginx's access log."""

import os
import pathlib

import pytest

from peers import Nginx, make_random_file


def extra_locations(flag_path):
    """Server-block text: /redirect/NAME answers 302 to /NAME, and
    /flaky/NAME serves NAME but answers 503 while flag_path exists (a
    real nginx, switched by a file)."""
    return f"""
        location /redirect/ {{
            rewrite ^/redirect/(.*)$ /$1 redirect;
        }}
        location /flaky/ {{
            if (-f {flag_path}) {{
                return 503;
            }}
            alias {{root}}/;
        }}
        location /noranges/ {{
            max_ranges 0;
            alias {{root}}/;
        }}
        location /nohead/ {{
            if ($request_method = HEAD) {{
                return 405;
            }}
            alias {{root}}/;
        }}
        location /secure/ {{
            auth_basic "diskshelf test";
            auth_basic_user_file {{prefix}}/htpasswd;
            if ($http_x_diskshelf_test != "yes") {{
                return 403;
            }}
            if ($cookie_session != "abc123") {{
                return 403;
            }}
            alias {{root}}/;
        }}
"""


class FixedNginx(Nginx):
    """peers.Nginx, with its access_log line moved after the log_format
    it names (nginx refuses an access_log with a format not yet defined).
    Remove once peers.py has the fix.  Also: HTTP/2 on the TLS port and
    $server_protocol at the end of each access-log line."""

    def write_conf(self):
        super().write_conf()
        text = self.conf.read_text()
        text = text.replace(" ssl;", " ssl http2;")
        text = text.replace("$request_time';", "$request_time $server_protocol';")
        lines = text.splitlines()
        access = [ln for ln in lines if ln.strip().startswith("access_log")]
        fmt = [ln for ln in lines if ln.strip().startswith("log_format")]
        if access and fmt and lines.index(access[0]) < lines.index(fmt[0]):
            lines.remove(access[0])
            lines.insert(lines.index(fmt[0]) + 1, access[0])
        self.conf.write_text("\n".join(lines) + "\n")


class HeaderLoggingNginx(FixedNginx):
    """A FixedNginx that also writes, for every request, the headers a
    client might leak to it into headers.log: uri, Authorization,
    Cookie, X-Diskshelf-Test and User-Agent, tab-separated."""

    def write_conf(self):
        super().write_conf()
        text = self.conf.read_text()
        fmt = ("    log_format hdr '$request_method\\t$uri\\t$http_authorization\\t"
               "$http_cookie\\t$http_x_diskshelf_test\\t$http_user_agent';\n"
               f"    access_log {self.prefix}/headers.log hdr;\n")
        text = text.replace("    client_body_temp_path", fmt + "    client_body_temp_path", 1)
        self.conf.write_text(text)

    def headers_log_reset(self):
        """Forget the requests logged so far (nginx keeps appending)."""
        path = self.prefix / "headers.log"
        if path.exists():
            path.write_text("")

    def headers_seen(self):
        """One dict per request: method, uri, authorization, cookie,
        x_diskshelf_test, user_agent ("-" or "" when absent)."""
        path = self.prefix / "headers.log"
        if not path.exists():
            return []
        keys = ("method", "uri", "authorization", "cookie", "x_diskshelf_test", "user_agent")
        return [dict(zip(keys, line.split("\t")))
                for line in path.read_text().splitlines()]


class HttpServer:
    """An nginx with the extra locations above; `flag` toggles the 503s."""

    def __init__(self, prefix, ca):
        self.flag = pathlib.Path(prefix) / "fail503"
        self.nginx = HeaderLoggingNginx(prefix, ca=ca)
        # Basic auth for /secure/: user alice, password in nginx's {PLAIN} form.
        (pathlib.Path(prefix) / "htpasswd").write_text("alice:{PLAIN}s3cret-Passw0rd\n")
        self.nginx.set_extra(extra_locations(self.flag)
                             .replace("{root}", str(self.nginx.root))
                             .replace("{prefix}", str(prefix)))

    def start(self):
        self.nginx.start()
        return self

    def stop(self):
        self.nginx.stop()

    def redirect_away(self, base):
        """Make /away/NAME answer 302 to base + NAME (another server)."""
        self.nginx.set_extra(self.nginx.extra + f"""
        location /away/ {{
            rewrite ^/away/(.*)$ {base}$1 redirect;
        }}
""")

    def __getattr__(self, name):
        return getattr(self.nginx, name)


@pytest.fixture
def http_server(tmp_path, test_ca):
    server = HttpServer(tmp_path / "nginx", test_ca).start()
    yield server
    server.stop()


def protocols(server):
    """The $server_protocol of every access-log line, in order."""
    return [line.rsplit(" ", 1)[-1] for line in server.access_log.read_text().splitlines()]


def data_gets(server, uri):
    """Range GETs that carried data for uri (the size probe is a HEAD)."""
    return [r for r in server.requests()
            if r["method"] == "GET" and r["uri"] == uri and r["bytes"] > 1]


def place_image(server, name, size, seed=1):
    """A random image of `size` bytes at server.root/name."""
    return make_random_file(server.root / name, size, seed=seed)


def absent(value):
    """True when nginx logged no such header ("-" or empty)."""
    return value in ("", "-")


@pytest.fixture
def header_server(tmp_path, test_ca):
    """A second nginx (HTTP and HTTPS) that logs the credentials it gets."""
    server = HeaderLoggingNginx(tmp_path / "nginx2", ca=test_ca).start()
    yield server
    server.stop()
